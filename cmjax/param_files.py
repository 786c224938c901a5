"""Parameter trees as flat '/'-keyed arrays (the .npz layout of converted weights), and loading
them with one-line errors: shared by LPIPS, FID's Inception and test assets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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
