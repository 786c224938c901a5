"""Reading PyTorch pickles without torch and without running code from the file.

EDM's network pickles (NVlabs/edm `torch_utils/persistence.py`, also used by ECT, locuslab/ect)
embed each network's Python source and would `exec` it on `pickle.load`; their tensors are
pickled storages whose bytes are a legacy-format `torch.save` file. `torch.save` `.pt` files
(OpenAI consistency_models' state dicts) are a zip of a pickle plus raw storage data.

`RestrictedUnpickler` reads all of these with an explicit allow-list of globals (`ALLOWED`), each
mapped to an inert Python/numpy stand-in; any other global raises `UnsafePickleError` before
anything is called. What comes back:
  * tensors (Parameters too) -> numpy arrays (copies, C-contiguous, the file's dtype);
  * EDM persistent objects -> `PersistentObject` records (class name, source hash, state),
    their source never executed;
  * other torch modules (ModuleDict, ...) -> `ModuleRecord` (class name, state);
  * bound methods (ECT's ECMLoss keeps `self.t_to_r`) -> `MethodRef` (never resolved);
  * dicts, OrderedDicts, EasyDicts, lists, tuples, sets, numbers, strings, numpy scalars;
  * numpy arrays (numeric) -> `safe_numpy.NumpyArray` records (`.array`).

The storage formats (torch/serialization.py): legacy = 5 consecutive pickles (magic number,
protocol version 1001, sys info, the object with persistent ids
('storage', <torch.XStorage>, key, location, numel, view_metadata), the list of storage keys), then
per key an int64 element count and the little-endian raw data; zip = `<dir>/data.pkl` with
persistent ids ('storage', <torch.XStorage>, key, location, numel) and the raw data in
`<dir>/data/<key>`. A tensor is `_rebuild_tensor_v2(storage, offset, size, stride, ...)`, rebuilt
here with `np.lib.stride_tricks.as_strided` and copied.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from cmjax.errors import WeightsFileError  # noqa: F401 - re-exported
from cmjax.weights.safe_numpy import ALLOWED_NUMPY, numpy_global

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
LEGACY_PROTOCOL = 1001




class UnsafePickleError(WeightsFileError):
  """A pickle asks for a global outside the allow-list (it could run code); one-line message."""


# Storage type name -> numpy dtype (little-endian). bfloat16 needs ml_dtypes (a jax dependency).
_STORAGE_DTYPES = {
    "FloatStorage": "<f4", "HalfStorage": "<f2", "DoubleStorage": "<f8",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?", "BFloat16Storage": "bfloat16",
}


@dataclasses.dataclass
class PersistentObject:
  """Inert record of an EDM persistent object (`persistence._reconstruct_persistent_obj(meta)`).

  Attributes:
    class_name: e.g. 'EDMPrecond', 'SongUNet'.
    source_sha256: sha256 of the embedded module source (the source itself is never executed).
    source_chars: length of that source.
    version: persistence format version.
    state: the object's __dict__ as pickled: for torch modules '_parameters', '_buffers',
      '_modules' (name -> array / record) and '_init_kwargs' (the constructor's kwargs).
  """
  class_name: str
  source_sha256: str
  source_chars: int
  version: int
  state: dict

  @property
  def init_kwargs(self) -> dict:
    """The constructor kwargs EDM's persistence recorded ({} if none)."""
    return dict(self.state.get("_init_kwargs") or {})


class ModuleRecord:
  """Inert record of a non-persistent pickled torch module (e.g. torch.nn.ModuleDict)."""
  class_name = "Module"

  def __init__(self, *args, **kwargs):
    self.state: dict = {}

  def __setstate__(self, state):
    if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
      state = {**(state[0] or {}), **(state[1] or {})}
    if not isinstance(state, dict):
      raise WeightsFileError(f"{self.class_name}: state is {type(state).__name__}, not a dict")
    self.state = state

  def __repr__(self):
    return f"ModuleRecord({self.class_name})"


@dataclasses.dataclass(frozen=True)
class MethodRef:
  """`getattr(obj, name)` as pickled for a bound method: recorded, never looked up."""
  owner: Any
  name: str


class EasyDict(dict):
  """Stand-in for dnnlib.util.EasyDict: a plain dict (attribute access not provided)."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
  name: str

  @property
  def dtype(self) -> np.dtype:
    spec = _STORAGE_DTYPES[self.name]
    if spec == "bfloat16":
      try:
        import ml_dtypes
      except ImportError as e:
        raise WeightsFileError("bfloat16 tensors need the ml_dtypes package") from e
      return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(spec)


class _Storage:
  """A flat typed storage: `array` (numel,) once its data has been read."""

  def __init__(self, stype: _StorageType, numel: int, array=None):
    self.dtype, self.numel, self.array = stype.dtype, int(numel), array


class _PendingTensor:
  """A tensor of a legacy-format file whose storage data comes after the pickle."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _strided(storage: _Storage, offset, size, stride, where: str) -> np.ndarray:
  """storage[offset + sum(i_k stride_k)] for the index grid of `size`, copied (C order)."""
  size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
  if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
    raise WeightsFileError(f"{where}: bad tensor geometry size={size} stride={stride} "
                           f"offset={offset}")
  flat = storage.array
  if any(s == 0 for s in size):
    return np.zeros(size, storage.dtype)
  last = offset + sum((n - 1) * s for n, s in zip(size, stride))
  if last >= flat.shape[0]:
    raise WeightsFileError(f"{where}: tensor of size {size} (offset {offset}, stride {stride}) "
                           f"reaches past its storage of {flat.shape[0]} elements")
  item = flat.dtype.itemsize
  view = np.lib.stride_tricks.as_strided(flat[offset:], shape=size,
                                         strides=tuple(s * item for s in stride), writeable=False)
  return np.array(view, copy=True, order="C")


def _codecs_encode(text, encoding="utf-8"):
  """Stand-in for _codecs.encode (protocol 2 pickles bytes as encode(str, 'latin1'))."""
  if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
    raise WeightsFileError(f"refused _codecs.encode with encoding {encoding!r}")
  return text.encode("latin1")


def _getattr_ref(obj, name, *default):
  """Stand-in for builtins.getattr (pickled bound methods): a MethodRef, nothing looked up."""
  if not isinstance(name, str):
    raise WeightsFileError("refused getattr with a non-string name")
  return MethodRef(obj, name)


def _torch_size(dims=()):
  return tuple(int(d) for d in dims)


def _module_class(name: str) -> type:
  return type(name, (ModuleRecord,), {"class_name": name})


_MODULE_CLASSES = {
    ("torch.nn.modules.container", "ModuleDict"), ("torch.nn.modules.container", "ModuleList"),
    ("torch.nn.modules.container", "Sequential"), ("torch.nn.modules.module", "Module"),
}


class RestrictedUnpickler(pickle.Unpickler):
  """pickle.Unpickler whose find_class admits only `ALLOWED` globals, as inert stand-ins.

  Args:
    file: a binary file object positioned at a pickle.
    where: the file's name, for error messages.
    storages: persistent id resolver for torch storages (set by the torch loaders), or None
      (an EDM network pickle has no persistent ids at the top level).
  """

  def __init__(self, file, where: str, storages=None):
    super().__init__(file)
    self.where, self._storages, self.pending = where, storages, []

  def find_class(self, module: str, name: str):
    if module == "__builtin__":  # protocol 0-2 pickles name Python 3's builtins this way
      module = "builtins"
    target = _allowed(self, module, name)
    if target is None:
      raise UnsafePickleError(f"refused global '{module}.{name}' in {self.where} "
                              f"(only tensors and plain containers are read)")
    return target

  def persistent_load(self, pid):
    if self._storages is None:
      raise WeightsFileError(f"{self.where}: unexpected persistent id {str(pid)[:80]}")
    return self._storages(pid)

  # Stand-ins that need the unpickler (file name, pending tensors of the legacy format).
  def rebuild_tensor(self, storage, offset, size, stride, *unused):
    if not isinstance(storage, _Storage):
      raise WeightsFileError(f"{self.where}: a tensor without a storage ({type(storage).__name__})")
    if storage.array is None:
      t = _PendingTensor(storage, offset, size, stride)
      self.pending.append(t)
      return t
    return _strided(storage, offset, size, stride, self.where)

  def rebuild_parameter(self, data, requires_grad=False, hooks=None, *state):
    if not isinstance(data, (np.ndarray, _PendingTensor)):
      raise WeightsFileError(f"{self.where}: a Parameter around {type(data).__name__}")
    return data

  def load_from_bytes(self, data: bytes):
    if not isinstance(data, (bytes, bytearray)):
      raise WeightsFileError(f"{self.where}: storage bytes of type {type(data).__name__}")
    return _load_torch_bytes(bytes(data), self.where + " (a pickled storage)")

  def reconstruct_persistent(self, meta):
    if not isinstance(meta, dict) or meta.get("type") != "class":
      raise WeightsFileError(f"{self.where}: bad persistent-object record")
    src = meta.get("module_src") or ""
    state = meta.get("state") or {}
    if not isinstance(state, dict):
      raise WeightsFileError(f"{self.where}: persistent {meta.get('class_name')} state is not "
                             f"a dict")
    return PersistentObject(str(meta.get("class_name")), hashlib.sha256(src.encode()).hexdigest(),
                            len(src), int(meta.get("version", 0)), dict(state))


def _allowed(u: RestrictedUnpickler, module: str, name: str):
  """The stand-in for global module.name, or None (refused)."""
  if (module, name) == ("collections", "OrderedDict"):
    return collections.OrderedDict
  if module == "builtins" and name in ("set", "frozenset"):
    return {"set": set, "frozenset": frozenset}[name]
  if (module, name) == ("builtins", "getattr"):
    return _getattr_ref
  if (module, name) == ("_codecs", "encode"):
    return _codecs_encode
  if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
    return u.rebuild_tensor
  if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
    return u.rebuild_parameter
  if (module, name) == ("torch.storage", "_load_from_bytes"):
    return u.load_from_bytes
  if module == "torch" and name in _STORAGE_DTYPES:
    return _StorageType(name)
  if (module, name) == ("torch", "Size"):
    return _torch_size
  if (module, name) in _MODULE_CLASSES:
    return _module_class(name)
  if (module, name) == ("torch_utils.persistence", "_reconstruct_persistent_obj"):
    return u.reconstruct_persistent
  if (module, name) == ("dnnlib.util", "EasyDict"):
    return EasyDict
  if module == "numpy" or module.startswith("numpy."):
    return numpy_global(module, name)
  return None


ALLOWED = (
    "collections.OrderedDict", "builtins.set", "builtins.frozenset",
    "builtins.getattr (-> MethodRef, not looked up)", "_codecs.encode (latin-1 only)",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch.storage._load_from_bytes", "torch.Size",
    *(f"torch.{n}" for n in _STORAGE_DTYPES),
    *(f"{m}.{n}" for m, n in sorted(_MODULE_CLASSES)),
    "torch_utils.persistence._reconstruct_persistent_obj", "dnnlib.util.EasyDict",
    *ALLOWED_NUMPY,
)


def _load(u: RestrictedUnpickler):
  """u.load() with pickle's own errors turned into one WeightsFileError line."""
  try:
    return u.load()
  except WeightsFileError:
    raise
  except (EOFError, pickle.UnpicklingError, struct.error, ValueError, TypeError, KeyError,
          IndexError, AttributeError, UnicodeDecodeError, MemoryError) as e:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise WeightsFileError(f"{u.where}: truncated or corrupt pickle ({type(e).__name__}: "
                           f"{msg[:120]})") from None


def _storage_pid(pid, where):
  """('storage', storage_type, key, location, numel[, view_metadata]) -> (type, key, numel)."""
  if (not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage"
      or not isinstance(pid[1], _StorageType)):
    raise WeightsFileError(f"{where}: unsupported persistent id {str(pid)[:80]}")
  if len(pid) > 5 and pid[5] is not None:
    raise WeightsFileError(f"{where}: storage views (very old torch files) are not supported")
  return pid[1], str(pid[2]), int(pid[4])


def _resolve(obj, seen=None):
  """Replaces _PendingTensors in containers/records (legacy format) by numpy arrays, in place."""
  seen = set() if seen is None else seen
  if id(obj) in seen:
    return obj
  seen.add(id(obj))
  if isinstance(obj, _PendingTensor):
    return _strided(obj.storage, obj.offset, obj.size, obj.stride, "legacy torch file")
  if isinstance(obj, dict):
    for k in list(obj):
      obj[k] = _resolve(obj[k], seen)
  elif isinstance(obj, list):
    obj[:] = [_resolve(v, seen) for v in obj]
  elif isinstance(obj, tuple):
    return tuple(_resolve(v, seen) for v in obj)
  elif isinstance(obj, (PersistentObject, ModuleRecord)):
    _resolve(obj.state, seen)
  return obj


def _load_legacy(f: io.BufferedIOBase, where: str):
  """The legacy (non-zip) torch.save format; see the module docstring."""
  if _load(RestrictedUnpickler(f, where)) != LEGACY_MAGIC:
    raise WeightsFileError(f"{where}: not a torch file (no legacy magic number)")
  if _load(RestrictedUnpickler(f, where)) != LEGACY_PROTOCOL:
    raise WeightsFileError(f"{where}: unsupported legacy torch protocol")
  info = _load(RestrictedUnpickler(f, where))
  if not isinstance(info, dict) or not info.get("little_endian", False):
    raise WeightsFileError(f"{where}: only little-endian torch files are supported")
  storages: dict = {}

  def storage(pid):
    stype, key, numel = _storage_pid(pid, where)
    if key not in storages:
      storages[key] = _Storage(stype, numel)
    return storages[key]

  u = RestrictedUnpickler(f, where, storage)
  obj = _load(u)
  keys = _load(RestrictedUnpickler(f, where))
  if not isinstance(keys, list):
    raise WeightsFileError(f"{where}: corrupt storage key list")
  for key in keys:
    s = storages.get(str(key))
    head = f.read(8)
    if s is None or len(head) != 8:
      raise WeightsFileError(f"{where}: truncated or corrupt storage data (key {key})")
    (numel,) = struct.unpack("<q", head)
    nbytes = numel * s.dtype.itemsize
    raw = f.read(nbytes)
    if numel != s.numel or len(raw) != nbytes:
      raise WeightsFileError(f"{where}: truncated storage data (key {key}: {len(raw)} of "
                             f"{s.numel * s.dtype.itemsize} bytes)")
    s.array = np.frombuffer(raw, s.dtype)
  if any(s.array is None for s in storages.values()):
    raise WeightsFileError(f"{where}: a storage has no data")
  return _resolve(obj) if u.pending else obj


def _load_zip(data, where: str):
  """The zip torch.save format: <dir>/data.pkl + <dir>/data/<key>; see the module docstring."""
  try:
    z = zipfile.ZipFile(data)
    names = z.namelist()
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise WeightsFileError(f"{where}: corrupt zip torch file ({e})") from None
  pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
  if len(pkl) != 1:
    raise WeightsFileError(f"{where}: zip without exactly one <dir>/data.pkl (not a torch file)")
  prefix = pkl[0][: -len("data.pkl")]
  if prefix + "byteorder" in names and z.read(prefix + "byteorder").strip() != b"little":
    raise WeightsFileError(f"{where}: only little-endian torch files are supported")
  storages: dict = {}

  def storage(pid):
    stype, key, numel = _storage_pid(pid, where)
    if key not in storages:
      try:
        raw = z.read(f"{prefix}data/{key}")
      except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise WeightsFileError(f"{where}: storage {key} missing or corrupt ({e})") from None
      s = _Storage(stype, numel)
      if len(raw) < numel * s.dtype.itemsize:
        raise WeightsFileError(f"{where}: storage {key} has {len(raw)} bytes, expected "
                               f"{numel * s.dtype.itemsize}")
      s.array = np.frombuffer(raw[: numel * s.dtype.itemsize], s.dtype)
      storages[key] = s
    return storages[key]

  try:
    body = z.read(pkl[0])
  except (zipfile.BadZipFile, OSError, EOFError) as e:
    raise WeightsFileError(f"{where}: corrupt zip torch file ({e})") from None
  return _load(RestrictedUnpickler(io.BytesIO(body), where, storage))


def _load_torch_bytes(data: bytes, where: str):
  if data[:4] == b"PK\x03\x04":
    return _load_zip(io.BytesIO(data), where)
  return _load_legacy(io.BytesIO(data), where)


def _read(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise WeightsFileError(f"cannot read {path}: {e.strerror or e}") from None


def load_pickle(path: str):
  """A plain pickle (EDM/ECT network pickle) read with `RestrictedUnpickler`.

  Returns the pickled object with tensors as numpy arrays and persistent objects as
  `PersistentObject` records. Raises UnsafePickleError (a global outside `ALLOWED`) or
  WeightsFileError (truncated/corrupt), one line each; nothing from the file is executed.
  """
  data = _read(path)
  if data[:4] == b"PK\x03\x04":
    raise WeightsFileError(f"{path}: a zip torch file, not a network pickle (use load_torch_file)")
  return _load(RestrictedUnpickler(io.BytesIO(data), path))


def load_torch_file(path: str):
  """A `torch.save` file (zip or legacy format) -> its object, tensors as numpy arrays.

  E.g. OpenAI consistency_models' `.pt` state dicts -> OrderedDict name -> array (the torch
  layout: conv (O, I, kh, kw), linear (out, in)). Same allow-list and errors as `load_pickle`.
  """
  data = _read(path)
  if data[:4] == b"PK\x03\x04":
    return _load_zip(io.BytesIO(data), path)
  return _load_legacy(io.BytesIO(data), path)
