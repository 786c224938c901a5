"""Consistency-model samplers (Song et al. 2023, Algorithm 1 "multistep consistency sampling")."""
from __future__ import annotations

from typing import Sequence

import math

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.arrays import bcast
from cmjax.parametrization import trigflow_consistency

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
    noise = _per_example_noise(key, j, first_index, z.shape, z.dtype)
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


def edm_sigmas(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
               rho: float = 7.0) -> list[float]:
  """EDM's sampling grid (Karras et al. 2022, Eq. 5): num_steps decreasing levels from
  sigma_max to sigma_min, then 0. Returns a Python list of num_steps + 1 floats."""
  i = np.arange(num_steps, dtype=np.float64)
  lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
  s = (hi + i / max(num_steps - 1, 1) * (lo - hi)) ** rho
  return [float(v) for v in s] + [0.0]


def ode_step(denoise, x: Array, s_from: Array, s_to: Array, solver: str = "heun") -> Array:
  """One step of the probability-flow ODE dx/ds = (x - D(x; s)) / s from s_from to s_to.

  EDM Algorithm 1: an Euler step, plus Heun's correction when solver='heun' and s_to > 0.
  denoise(x (B, ...), s (B,)) -> (B, ...); s_from, s_to: (B,) or scalars (s_from > 0).
  """
  if solver not in ("heun", "euler"):
    raise ValueError(f"unknown ODE solver {solver!r}; known: 'heun', 'euler'")
  b = x.shape[0]
  s_from = jnp.broadcast_to(jnp.asarray(s_from, x.dtype), (b,))
  s_to = jnp.broadcast_to(jnp.asarray(s_to, x.dtype), (b,))
  bc = lambda v: bcast(v, x)
  d = (x - denoise(x, s_from)) / bc(s_from)
  x_next = x + bc(s_to - s_from) * d
  if solver == "euler":
    return x_next
  safe_to = jnp.where(s_to > 0, s_to, 1.0)
  d2 = (x_next - denoise(x_next, safe_to)) / bc(safe_to)
  heun = x + bc(s_to - s_from) * 0.5 * (d + d2)
  return jnp.where(bc(s_to > 0), heun, x_next)


def edm_sample(denoiser_fn, params, z: Array, sigmas: Sequence[float], solver: str = "heun") -> Array:
  """Deterministic EDM sampler (Karras et al. 2022, Algorithm 1 with S_churn = 0).

  Args:
    denoiser_fn: D(params, x (B, ...), s (B,)) (eval mode).
    z: (B, ...) standard normal; the start is x = sigmas[0] z.
    sigmas: decreasing noise levels ending in 0 (`edm_sigmas`); N levels > 0 give
      2N - 1 network evaluations with Heun (the last step to 0 is Euler).
  Returns:
    (B, ...) samples.
  """
  x = sigmas[0] * z
  denoise = lambda v, s: denoiser_fn(params, v, s)
  last_to_zero = sigmas[-1] == 0
  body = sigmas[:-1] if last_to_zero else sigmas
  x = _scan_steps(lambda v, a, b: ode_step(denoise, v, a, b, solver), x, jnp.asarray(body[:-1]),
                  jnp.asarray(body[1:]))
  if last_to_zero:  # the final step to 0 is Euler (Heun would divide by 0)
    x = ode_step(denoise, x, sigmas[-2], 0.0, "euler")
  return x


def _scan_steps(step, x: Array, froms: Array, tos: Array) -> Array:
  """x after step(x, froms[i], tos[i]) for every i, as one `lax.scan` (the network is compiled
  once, not once per step)."""
  if froms.shape[0] == 0:
    return x
  return jax.lax.scan(lambda v, ab: (step(v, ab[0], ab[1]), None), x, (froms, tos))[0]


def _per_example_noise(key: Array, j: int, first_index, shape, dtype) -> Array:
  """Noise of step j for examples first_index.. : fold_in(fold_in(key, j), global index)."""
  step_key = jax.random.fold_in(key, j)
  idx = first_index + jnp.arange(shape[0])
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(step_key, i), shape[1:], dtype))(idx)


def trigflow_multistep_sample(F_fn, params, z: Array, times: Sequence[float], key: Array | None = None,
                              sigma_data: float = 0.5, first_index=0) -> Array:
  """sCM sampling (Lu & Song 2024, Algorithm 2) in TrigFlow time.

  x = f(sd z, times[0]) with f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t/sd, t); then for each t in
  times[1:]: x_t = cos(t) x + sin(t) sd z', x = f(x_t, t). times[0] is pi/2 for 1-step
  sampling; sCM's 2-step CIFAR-10 middle time is 1.1.

  Args:
    F_fn: F(params, x (B, ...), t (B,)) (eval mode).
    z: (B, ...) standard normal. key: re-noising key (noise of example i at step j from
      fold_in(fold_in(key, j), first_index + i), as in `multistep_sample`).
  Returns:
    (B, ...) samples.
  """
  if len(times) > 1 and key is None:
    raise ValueError("multistep sampling needs a key for the re-noising steps")
  b = z.shape[0]
  x = sigma_data * z
  t0 = jnp.full((b,), times[0], z.dtype)
  x = trigflow_consistency(x, t0, F_fn(params, x, t0), sigma_data)
  for j, t in enumerate(times[1:], start=1):
    noise = _per_example_noise(key, j, first_index, z.shape, z.dtype)
    tt = jnp.full((b,), t, z.dtype)
    x_t = jnp.cos(t) * x + jnp.sin(t) * sigma_data * noise
    x = trigflow_consistency(x_t, tt, F_fn(params, x_t, tt), sigma_data)
  return x


def trigflow_ode_sample(F_fn, params, z: Array, times: Sequence[float], sigma_data: float = 0.5) -> Array:
  """Deterministic sampler of a TrigFlow diffusion model (the teacher of sCD).

  Start x = sd z at times[0] (= pi/2); each step from t to s (< t) is the DDIM step, exact
  for the TrigFlow ODE dx/dt = sd F when F is constant over the step:
    x0_hat = cos(t) x - sin(t) sd F,  z_hat = sin(t) x + cos(t) sd F,
    x <- cos(s) x0_hat + sin(s) z_hat.
  times: decreasing, ending at 0 (e.g. arctan of `edm_sigmas` / sd, with pi/2 first).
  """
  b = z.shape[0]

  def step(x, t, s):
    F = F_fn(params, x, jnp.full((b,), t, z.dtype))
    x0 = jnp.cos(t) * x - jnp.sin(t) * sigma_data * F
    zh = jnp.sin(t) * x + jnp.cos(t) * sigma_data * F
    return jnp.cos(s) * x0 + jnp.sin(s) * zh

  t = jnp.asarray(times, jnp.float32)
  return _scan_steps(step, sigma_data * z, t[:-1], t[1:])


def trigflow_ode_times(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
                       sigma_data: float = 0.5, rho: float = 7.0) -> list[float]:
  """pi/2, then arctan(sigma_i / sd) of the Karras grid below sigma_max, then 0 (num_steps + 1 times)."""
  s = edm_sigmas(num_steps, sigma_min, sigma_max, rho)
  return [math.pi / 2] + [math.atan(v / sigma_data) for v in s[1:]]


def edm_ode_from(denoiser_fn, params, x: Array, sigma: Array, steps: int = 18,
                 sigma_end: float = 0.002, rho: float = 7.0, solver: str = "heun") -> Array:
  """A diffusion model's own consistency function: its PF-ODE from per-example levels to sigma_end.

  x: (B, ...) at noise levels sigma (B,); each example follows its own Karras grid (rho = 7)
  from sigma to sigma_end in `steps` Heun (or Euler) steps. Returns (B, ...).
  """
  lo, hi = sigma_end ** (1 / rho), sigma ** (1 / rho)
  grid = (hi[None] + (jnp.arange(steps + 1) / steps)[:, None] * (lo - hi[None])) ** rho   # (S+1, B)
  denoise = lambda v, s: denoiser_fn(params, v, s)
  return _scan_steps(lambda v, a, b: ode_step(denoise, v, a, b, solver), x, grid[:-1], grid[1:])


def trigflow_ode_from(F_fn, params, x: Array, t: Array, steps: int = 18, sigma_end: float = 0.002,
                      sigma_data: float = 0.5, rho: float = 7.0) -> Array:
  """A TrigFlow diffusion model's PF-ODE from per-example times t (B,) to ~0, by DDIM steps
  (`trigflow_ode_sample`) on the Karras grid mapped to TrigFlow time. Returns x0 (B, ...)."""
  bc = lambda v: bcast(v, x)
  lo, hi = sigma_end ** (1 / rho), (sigma_data * jnp.tan(t)) ** (1 / rho)
  frac = (jnp.arange(steps + 1) / steps)[:, None]
  times = jnp.arctan((hi[None] + frac * (lo - hi[None])) ** rho / sigma_data)      # (S+1, B)
  times = times.at[0].set(t).at[-1].set(0.0)

  def step(x, a, b):
    F = F_fn(params, x, a)
    x0 = bc(jnp.cos(a)) * x - bc(jnp.sin(a)) * sigma_data * F
    zh = bc(jnp.sin(a)) * x + bc(jnp.cos(a)) * sigma_data * F
    return bc(jnp.cos(b)) * x0 + bc(jnp.sin(b)) * zh

  return _scan_steps(step, x, times[:-1], times[1:])
