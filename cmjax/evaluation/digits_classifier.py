"""A small CNN digit classifier whose penultimate features define digits-FD.

The weights ship in `cmjax/assets/digits_classifier.npz` (plain npz of float32
arrays, flat keys like 'Conv_0/kernel'; loaded with allow_pickle=False). They are
regenerated deterministically (train split only) by

  python scripts/train_digits_classifier.py

(~50 s on 2 CPU cores; the output file is byte-identical across runs).
Measured with the shipped weights: train accuracy 100.0%, held-out accuracy
100.0% (360/360). 151,306 parameters.
"""
from __future__ import annotations

import functools
import io
import pathlib
import zipfile
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

FEATURE_DIM = 128
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
WEIGHTS_PATH = pathlib.Path(__file__).resolve().parent.parent / "assets" / "digits_classifier.npz"


class DigitsClassifier(nn.Module):
  """CNN on (N, 8, 8, 1) images in [-1, 1].

  Conv3x3(32)-relu, Conv3x3(64)-relu, avg-pool 2x2, Dense(FEATURE_DIM)-relu
  (the features), Dense(10) (the logits).
  """

  @nn.compact
  def __call__(self, x: jax.Array, return_features: bool = False) -> jax.Array:
    """Returns logits (N, 10), or features (N, FEATURE_DIM) if return_features."""
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    x = nn.relu(nn.Conv(64, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    feats = nn.relu(nn.Dense(FEATURE_DIM)(x))
    if return_features:
      return feats
    return nn.Dense(NUM_CLASSES)(feats)


def _flatten(params: Any, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in params.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_flatten(v, name + "/"))
    else:
      out[name] = np.asarray(v)
  return out


def save_classifier_params(params: Any, path: str | pathlib.Path) -> None:
  """Writes params as an npz with flat '/'-joined keys.

  The zip entries get a fixed timestamp and sorted order, so identical params
  give a byte-identical file.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  flat = _flatten(params)
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
    for name in sorted(flat):
      buf = io.BytesIO()
      np.lib.format.write_array(buf, np.ascontiguousarray(flat[name]), allow_pickle=False)
      info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      zf.writestr(info, buf.getvalue())


def load_classifier_params(path: str | pathlib.Path = WEIGHTS_PATH) -> dict[str, Any]:
  """Loads an npz written by `save_classifier_params` into a nested params dict."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"digits classifier weights not found at {path}; regenerate them with "
        "`python scripts/train_digits_classifier.py`")
  params: dict[str, Any] = {}
  with np.load(path, allow_pickle=False) as data:
    for key in data.files:
      node = params
      *parents, leaf = key.split("/")
      for p in parents:
        node = node.setdefault(p, {})
      node[leaf] = np.asarray(data[key])
  return params


@functools.lru_cache(maxsize=1)
def _default_params() -> dict[str, Any]:
  return load_classifier_params(WEIGHTS_PATH)


@jax.jit
def _features_fn(params: Any, x: jax.Array) -> jax.Array:
  return DigitsClassifier().apply({"params": params}, x, return_features=True)


def digits_features(images: np.ndarray, params: Any = None,
                    batch_size: int = 1000) -> np.ndarray:
  """Penultimate (post-ReLU) classifier features.

  Args:
    images: (N, 8, 8, 1) in [-1, 1] (any N >= 0).
    params: classifier params; defaults to the shipped weights.
    batch_size: max images per forward pass.

  Returns:
    float32 (N, FEATURE_DIM).
  """
  return _apply_batched(_features_fn, images, params, batch_size, (FEATURE_DIM,), np.float32)


def _apply_batched(fn, images, params, batch_size: int, out_shape: tuple, dtype) -> np.ndarray:
  """fn(params, batch) over (N, 8, 8, 1) images in chunks of one compiled shape (the last chunk
  padded) -> (N, *out_shape)."""
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(f"the digits classifier expects images of shape (N, 8, 8, 1), got {images.shape}")
  if params is None:
    params = _default_params()
  n = images.shape[0]
  if n == 0:
    return np.zeros((0,) + out_shape, dtype)
  chunk = min(batch_size, n)  # one compiled shape per chunk size; pad the last chunk
  out = []
  for start in range(0, n, chunk):
    batch = images[start:start + chunk]
    m = batch.shape[0]
    if m < chunk:
      batch = np.concatenate([batch, np.zeros((chunk - m,) + IMAGE_SHAPE, np.float32)])
    out.append(np.asarray(fn(params, batch))[:m])
  return np.concatenate(out, axis=0).astype(dtype)


@jax.jit
def _classes_fn(params: Any, x: jax.Array) -> jax.Array:
  return jnp.argmax(DigitsClassifier().apply({"params": params}, x), -1)


def digits_predict(images: np.ndarray, params: Any = None, batch_size: int = 1000) -> np.ndarray:
  """Predicted classes: (N, 8, 8, 1) images in [-1, 1] -> int32 (N,) (argmax of the logits)."""
  return _apply_batched(_classes_fn, images, params, batch_size, (), np.int32)
