"""Parameter trees as flat '/'-keyed arrays (the .npz layout of converted weights), and loading
them with one-line errors: shared by LPIPS, FID's Inception and test assets.

`read_npz` reads every array of an .npz without pickle (np.load(allow_pickle=False)) and turns
every way a file can be bad (missing, not a zip, truncated, a bad CRC-32, an object array, a
damaged .npy header) into one WeightsFileError line naming the file and the config field."""
from __future__ import annotations

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.errors import WeightsFileError


def read_npz(path: str, field: str) -> dict[str, np.ndarray]:
  """{key: array} of every array in the .npz at `path`, fully read (so a truncated or bit-flipped
  member fails here, by its CRC-32). `field` names the config field in the error
  ('eval.fid_weights', 'ect.lpips_weights'). Raises WeightsFileError (one line); never unpickles:
  a file whose arrays need pickle is refused, and the fix is to rewrite it with plain arrays."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsFileError(f"{field}: no such file {path!r}")
  try:
    data = np.load(path, allow_pickle=False)
    if not hasattr(data, "files"):
      raise WeightsFileError(f"{field}: {path} holds a single .npy array, not an .npz of named "
                             f"arrays")
    with data:
      return {k: data[k] for k in data.files}
  except WeightsFileError:
    raise
  except ValueError as e:
    if "allow_pickle" in str(e) or "Object arrays" in str(e):
      raise WeightsFileError(f"{field}: {path} holds Python objects (pickled data), which cmjax "
                             f"never loads; save the arrays as plain numeric arrays") from None
    raise WeightsFileError(f"{field}: {path} is not a readable .npz (ValueError: "
                           f"{_short(e)})") from None
  except (OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as e:
    raise WeightsFileError(f"{field}: {path} is not a readable .npz (truncated or corrupt: "
                           f"{type(e).__name__}: {_short(e)})") from None


def _short(e: BaseException) -> str:
  return " ".join(str(e).split())[:160]


def flatten_params(params: dict) -> dict:
  """Nested params dict -> {'a/b/c': leaf} with '/'-joined keys (the .npz layout)."""
  return {"/".join(str(p.key) for p in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten_params(flat: dict) -> dict:
  """{'a/b/c': leaf} -> nested dict (inverse of flatten_params)."""
  tree: dict = {}
  for key, leaf in flat.items():
    *parents, last = key.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf
  return tree


def checked_params(arrays: dict, expected: dict, path: str, what: str) -> dict:
  """Flat `arrays` -> nested float32 params, after checking them against `expected` (key ->
  shape). Raises a one-line ValueError naming the first missing key, the first wrongly-shaped
  key (with both shapes), or the unexpected keys; `what` names the network ('LPIPS', ...)."""
  missing = [k for k in expected if k not in arrays]
  if missing:
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    raise ValueError(f"{path}: missing {what} key '{missing[0]}' with shape {expected[missing[0]]}{more}")
  for k, shape in expected.items():
    if tuple(arrays[k].shape) != tuple(shape):
      raise ValueError(f"{path}: {what} key '{k}' has shape {tuple(arrays[k].shape)}, expected {tuple(shape)}")
  extra = sorted(set(arrays) - set(expected))
  if extra:
    raise ValueError(f"{path}: unexpected {what} keys {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  return unflatten_params({k: jnp.asarray(np.asarray(arrays[k]), jnp.float32) for k in expected})
