"""Consistency-model samplers (Song et al. 2023, Algorithm 1 "multistep consistency sampling")."""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def multistep_sample(model_fn, params, z: Array, sigmas: Sequence[float], key: Array | None = None,
                     sigma_min: float = 0.002, renoise: str = "cm", first_index=0) -> Array:
  """One- or multi-step consistency sampling.

  x = f(sigmas[0] z, sigmas[0]); then for each tau in sigmas[1:]:
      x_tau = x + s(tau) z', z' ~ N(0, I);  x = f(x_tau, tau),
  with s(tau) = sqrt(tau^2 - sigma_min^2) (CM paper, Alg. 1; renoise='cm') or
  s(tau) = tau (ECT's code; renoise='plain').

  Args:
    model_fn: f(params, x (B,H,W,C), t (B,)) -> (B,H,W,C) (eval mode).
    params: parameters (usually the EMA copy).
    z: (B, H, W, C) standard normal noise for the first step.
    sigmas: decreasing noise levels; sigmas[0] = sigma_max (80) for the first step.
    key: PRNG key for the re-noising of later steps (needed if len(sigmas) > 1).
      Noise of example i at step j comes from fold_in(fold_in(key, j), first_index + i),
      so a sample does not depend on the batch it is drawn in.
    first_index: global index of z[0] (int or traced int), for drawing in chunks.
  Returns:
    (B, H, W, C) samples (not clipped).
  """
  if renoise not in ("cm", "plain"):
    raise ValueError(f"unknown renoise {renoise!r}; known: 'cm', 'plain'")
  if len(sigmas) > 1 and key is None:
    raise ValueError("multistep sampling needs a key for the re-noising steps")
  b = z.shape[0]
  t0 = jnp.full((b,), sigmas[0], z.dtype)
  x = model_fn(params, sigmas[0] * z, t0)
  for j, tau in enumerate(sigmas[1:], start=1):
    step_key = jax.random.fold_in(key, j)
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(step_key, i), z.shape[1:],
                                                 z.dtype))(first_index + jnp.arange(b))
    std = (tau**2 - sigma_min**2) ** 0.5 if renoise == "cm" else tau
    x = model_fn(params, x + std * noise, jnp.full((b,), tau, z.dtype))
  return x


def sample_noise(key: Array, num: int, image_shape: Sequence[int], start: int = 0) -> Array:
  """Standard normal z for examples start..start+num-1, example i from fold_in(key, i).

  Returns (num, *image_shape) float32; chunks drawn separately concatenate to the
  same array as one big draw.
  """
  idx = start + jnp.arange(num)  # start may be traced
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), tuple(image_shape)))(idx)
