"""Per-example distances d(a, b) between model outputs, reduced over all non-batch axes.

All take a, b of shape (B, ...) and return (B,).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _sum_sq(diff: Array) -> Array:
  return jnp.sum(jnp.square(diff.reshape(diff.shape[0], -1)), axis=-1)


def safe_sqrt(x: Array) -> Array:
  """sqrt(x) with a zero (not NaN) gradient at x = 0; NaN stays NaN (never hidden)."""
  positive = x > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), x * 0.0)


def l2_squared(a: Array, b: Array) -> Array:
  """||a - b||^2 per example: a, b (B, ...) -> (B,) (the CM paper's squared L2 metric)."""
  return _sum_sq(a - b)


def l2(a: Array, b: Array) -> Array:
  """||a - b|| per example: (B, ...) -> (B,) (the ECT CIFAR-10 distance, pseudo-Huber with c = 0)."""
  return safe_sqrt(_sum_sq(a - b))


def l1(a: Array, b: Array) -> Array:
  """||a - b||_1 per example: a, b (B, ...) -> (B,) (the CM paper's L1 metric)."""
  d = a - b
  return jnp.sum(jnp.abs(d.reshape(d.shape[0], -1)), axis=-1)


def pseudo_huber(a: Array, b: Array, c: float) -> Array:
  """sqrt(||a - b||^2 + c^2) - c over the WHOLE per-example vector (iCT Sec. 3.3; ECT).

  Not per pixel: the norm is taken over all dimensions of one example first.
  c = 0 gives the plain L2 norm.
  """
  return safe_sqrt(_sum_sq(a - b) + c**2) - c
