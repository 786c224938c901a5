"""Small array helpers shared by the objectives, preconditioners, samplers and metrics."""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def bcast(v: Array, x: Array) -> Array:
  """(B,) -> (B, 1, ..., 1) to broadcast against x (B, ...)."""
  v = jnp.asarray(v)
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


def per_example_dims(x: Array) -> int:
  """D, the number of dimensions of one example of x (B, ...)."""
  n = 1
  for d in x.shape[1:]:
    n *= d
  return n


def repeat_grayscale(x: Array) -> Array:
  """(B, H, W, 1) -> (B, H, W, 3) by repeating the single channel (Inception, LPIPS/VGG expect RGB)."""
  if x.ndim != 4 or x.shape[-1] != 1:
    raise ValueError(f"repeat_grayscale expects (B, H, W, 1) images, got shape {x.shape}")
  return jnp.repeat(x, 3, axis=-1)
