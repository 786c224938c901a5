"""Noise-level distributions and training curricula, as pure functions of the step.

Every curriculum here is an `optax.Schedule` (a function `step -> value` built
from jnp ops), so it is jit-friendly, needs no state and is restored for free
from the step stored in a checkpoint.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def lognormal_noise_levels(key: Array, shape, p_mean: float, p_std: float) -> Array:
  """t = exp(p_mean + p_std * n), n ~ N(0, 1) (EDM Eq. for p_train; ECT Sec. 3).

  Returns float32 of `shape`.
  """
  return jnp.exp(p_mean + p_std * jax.random.normal(key, shape))


def ect_stage(step: Array, stage_steps: int) -> Array:
  """ECT stage index floor(step / d) (authors' code convention, see `ect_decay_schedule`)."""
  return jnp.asarray(step, jnp.int32) // stage_steps


def ect_decay_schedule(q: float, stage_steps: int, initial_exponent: int = 1) -> optax.Schedule:
  """The ECT curriculum as an optax schedule: step -> 1 / q^(floor(step / d) + a0).

  ECT (Geng et al. 2024, Sec. 3.2, "mapping function") writes the exponent as
  a = ceil(iters / d); the authors' code uses stage = floor(iters / d) and
  q^(stage + 1), i.e. a0 = 1. The two agree except exactly at multiples of d; the
  default follows the code, whose schedule produced the published numbers.
  a0 = 0 makes the first stage pure denoising (decay 1, so r = 0 for every t):
  the natural start when training from scratch instead of from a diffusion model.
  """
  q = float(q)

  def schedule(step):
    stage = ect_stage(step, stage_steps)
    return jnp.power(jnp.float32(q), -(stage + initial_exponent).astype(jnp.float32))

  return schedule


def ect_mapping(t: Array, decay: Array, k: float = 8.0, b: float = 1.0) -> Array:
  """ECT mapping r(t) = max(0, t (1 - n(t) / q^a)), n(t) = 1 + k sigmoid(-b t).

  ECT paper Eq. (mapping function p(r | t, iters)) with the sigmoid adjustment.

  Args:
    t: noise levels, any shape.
    decay: 1 / q^a from `ect_decay_schedule(q, d)(step)` (scalar).
    k, b: the sigmoid adjustment's gain and slope (paper: k = 8, b = 1).
  Returns:
    r, same shape as t, with 0 <= r < t.
  """
  n = 1.0 + k * jax.nn.sigmoid(-b * t)
  return jnp.maximum(t * (1.0 - decay * n), 0.0)


def ema_decay_schedule(rate: float, warmup: bool = False) -> optax.Schedule:
  """EMA decay of the sampling parameters as a schedule of the step.

  warmup=False: the constant `rate`. warmup=True: min(rate, (1 + step) / (10 + step)),
  the usual warm-up of an EMA that starts from random parameters (it would otherwise
  keep a weight rate^step on the initialisation: 0.37 after 1,000 steps at 0.999).
  """
  if not warmup:
    return optax.constant_schedule(rate)
  return lambda step: jnp.minimum(rate, (1.0 + step) / (10.0 + step))


def warmup_constant_lr(lr: float, warmup_steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps`, then constant (EDM's lr_rampup)."""
  if warmup_steps <= 0:
    return optax.constant_schedule(lr)
  return optax.linear_schedule(0.0, lr, warmup_steps)
