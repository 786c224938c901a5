"""Inert stand-ins for the numpy globals a weights pickle may name (`cmjax.weights.safe_pickle`'s
allow-list): numeric dtypes, numeric scalars and numeric arrays, rebuilt from their bytes; nothing
from the file is called. EDM2's latent-space snapshots (edm2-img512-*) pickle their encoder's
numpy arrays (StabilityVAEEncoder.scale / .bias, shape (4,)), which is why arrays are read.

How numpy pickles them (numpy/_core/src/multiarray/methods.c, array_reduce / array_setstate):
an array (protocols 2-4) is `numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')`
followed by BUILD with state (version, shape, dtype, is_fortran, raw bytes); with protocol 5,
`numpy.core.numeric._frombuffer(buffer, dtype, shape, order)`. numpy >= 2 writes `numpy._core`.
"""
from __future__ import annotations

import numpy as np

from cmjax.errors import WeightsFileError

NUMERIC_DTYPE_CHARS = set("?bBhHiIlLqQefdgFD")
NUMPY_CORES = ("numpy.core", "numpy._core")


def np_dtype(spec, align=False, copy=True):
  """Stand-in for numpy.dtype(spec): numeric dtypes only (no object / structured types)."""
  if not (isinstance(spec, str) and len(spec) <= 4):
    raise WeightsFileError(f"refused numpy dtype {spec!r}")
  dt = np.dtype(spec)
  if dt.char not in NUMERIC_DTYPE_CHARS:
    raise WeightsFileError(f"refused numpy dtype {spec!r}")
  return dt


def _as_bytes(data, what: str) -> bytes:
  if isinstance(data, str):  # protocol 0-2 pickles store the bytes as a latin-1 string
    data = data.encode("latin1")
  if isinstance(data, memoryview):
    data = data.tobytes()
  if not isinstance(data, (bytes, bytearray)):
    raise WeightsFileError(f"bad numpy {what} data of type {type(data).__name__}")
  return bytes(data)


def np_scalar(dtype, data=None):
  """Stand-in for numpy.core.multiarray.scalar(dtype, bytes): a numeric numpy scalar."""
  if not isinstance(dtype, np.dtype) or dtype.char not in NUMERIC_DTYPE_CHARS:
    raise WeightsFileError(f"refused numpy scalar of dtype {dtype!r}")
  data = _as_bytes(data, "scalar")
  if len(data) != dtype.itemsize:
    raise WeightsFileError(f"bad numpy scalar data for dtype {dtype}")
  return np.frombuffer(data, dtype)[0]


def _array(data, dtype, shape, fortran: bool) -> np.ndarray:
  """A numeric array of `shape` from its raw bytes (a copy); one-line error if they disagree."""
  if not isinstance(dtype, np.dtype) or dtype.char not in NUMERIC_DTYPE_CHARS:
    raise WeightsFileError(f"refused numpy array of dtype {dtype!r}")
  try:
    shape = tuple(int(d) for d in shape)
  except (TypeError, ValueError):
    raise WeightsFileError(f"bad numpy array shape {shape!r}") from None
  data = _as_bytes(data, "array")
  if any(d < 0 for d in shape) or len(data) != int(np.prod(shape)) * dtype.itemsize:
    raise WeightsFileError(f"numpy array {shape} of {dtype}: {len(data)} bytes do not fit")
  return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran else "C").copy()


class NDArrayType:
  """Stand-in for the class numpy.ndarray (only passed to `_reconstruct`)."""


class NumpyArray:
  """A pickled numpy array, read: `.array` holds it (numeric dtypes only). Made by
  `np_reconstruct` and filled by pickle's BUILD (`__setstate__`)."""

  def __init__(self):
    self.array = None

  def __setstate__(self, state):
    if not (isinstance(state, tuple) and len(state) == 5):
      raise WeightsFileError("bad numpy array state")
    _, shape, dtype, fortran, data = state
    self.array = _array(data, dtype, shape, bool(fortran))

  def __repr__(self):
    return f"NumpyArray({None if self.array is None else self.array.shape})"


def np_reconstruct(subtype, shape=(0,), code=b"b"):
  """Stand-in for numpy.core.multiarray._reconstruct: an empty `NumpyArray` record."""
  if subtype is not NDArrayType:
    raise WeightsFileError(f"refused numpy array subtype {subtype!r}")
  return NumpyArray()


def np_frombuffer(buffer, dtype, shape, order="C"):
  """Stand-in for numpy.core.numeric._frombuffer (protocol 5): a numeric array (copied)."""
  return _array(buffer, dtype, shape, order == "F")


def numpy_global(module: str, name: str):
  """The stand-in for numpy global module.name, or None (refused)."""
  if (module, name) == ("numpy", "dtype"):
    return np_dtype
  if (module, name) == ("numpy", "ndarray"):
    return NDArrayType
  core = next((c for c in NUMPY_CORES if module.startswith(c + ".")), None)
  if core is None:
    return None
  return {(f"{core}.multiarray", "scalar"): np_scalar,
          (f"{core}.multiarray", "_reconstruct"): np_reconstruct,
          (f"{core}.numeric", "_frombuffer"): np_frombuffer}.get((module, name))


ALLOWED_NUMPY = ("numpy.dtype (numeric)", "numpy.ndarray (only for _reconstruct)",
                 *(f"{c}.multiarray.scalar" for c in NUMPY_CORES),
                 *(f"{c}.multiarray._reconstruct (-> NumpyArray)" for c in NUMPY_CORES),
                 *(f"{c}.numeric._frombuffer" for c in NUMPY_CORES))
