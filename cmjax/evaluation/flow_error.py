"""How far a trained average-velocity model is from the TRUE average velocity of the 8-Gaussian
toy data (MeanFlow, Geng et al. 2025, Eq. 3; shortcut models, Frans et al. 2025, as s = u(z, t - d, t)).

error(bucket) = E ||u_theta(z_t, r, t) - u*(z_t, r, t)||, z_t = (1 - t) x + t e with x ~ the
mixture and e ~ N(0, I), the gap d = t - r uniform within the bucket, t uniform in
[max(d, T_MIN), 1], r = t - d; u* = (z_t - z_r) / (t - r) from the exact flow ODE in float64
(`cmjax.exact_flow.average_velocity`, RK4), u* = v* where r = t.

Buckets of d = t - r: small [0, 0.1), medium [0.1, 0.5), large [0.5, 1] (the 1-step sampler is
d = 1, in the large bucket).

  average_velocity_errors(fn, params, gmm, buckets=BUCKETS, seed=0)
      -> {'meanflow_error_small', 'meanflow_error_medium', 'meanflow_error_large'}
  shortcut_errors(...)  the same numbers named 'shortcut_error_<bucket>' (d is the step size).
fn is a model_fn of the mean_flow family: fn(params, z (B, D), t (B,), t2=r (B,)) -> u (B, D).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.errors import ConfigError
from cmjax.exact_flow import average_velocity, noised

BUCKETS = (("small", 0.0, 0.1), ("medium", 0.1, 0.5), ("large", 0.5, 1.0))
T_MIN = 0.02  # v*(z, t) = (z - D) / t loses precision as t -> 0; stay at t >= 0.02
ODE_STEPS = 128  # RK4 steps for u*: within 2e-5 of 1,024 steps on every bucket (measured)


def bucket_points(gmm, lo: float, hi: float, n: int, rng: np.random.Generator):
  """(z (n, D), r (n,), t (n,)) float64: d = t - r ~ U[lo, hi), t ~ U[max(d, T_MIN), 1]."""
  d = rng.uniform(lo, hi, n)
  t = rng.uniform(np.maximum(d, T_MIN), 1.0)
  r = np.maximum(t - d, 0.0)
  return noised(gmm, n, t, rng), r, t


def average_velocity_errors(fn, params, gmm, buckets=BUCKETS, seed: int = 0,
                            num_per_bucket: int = 512, prefix: str = "meanflow_error",
                            ode_steps: int = ODE_STEPS) -> dict:
  """{'<prefix>_<bucket>': mean ||fn(params, z, t, t2=r) - u*(z, r, t)||} per bucket of t - r.

  fn: fn(params, z (B, D) float32, t (B,), t2=r (B,)) -> u (B, D) (jitted here); gmm: a
  `cmjax.exact_gmm.GaussianMixture`; buckets: ((name, lo, hi), ...) with 0 <= lo < hi <= 1.
  Deterministic given `seed`.
  """
  for name, lo, hi in buckets:
    if not 0.0 <= lo < hi <= 1.0:
      raise ConfigError(f"bucket {name!r}: need 0 <= lo < hi <= 1 for t - r, got ({lo}, {hi})")
  jfn = jax.jit(lambda p, z, t, r: fn(p, z, t, t2=r))
  rng = np.random.default_rng([seed, 11])
  out = {}
  for name, lo, hi in buckets:
    z, r, t = bucket_points(gmm, lo, hi, num_per_bucket, rng)
    exact = average_velocity(gmm, z, r, t, steps=ode_steps)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    pred = np.asarray(jfn(params, f32(z), f32(t), f32(r)), np.float64)
    out[f"{prefix}_{name}"] = float(np.mean(np.linalg.norm(pred - exact, axis=-1)))
  return out


def shortcut_errors(fn, params, gmm, buckets=BUCKETS, seed: int = 0,
                    num_per_bucket: int = 512) -> dict:
  """`average_velocity_errors` named 'shortcut_error_<bucket>' (buckets of the step size d = t - r).
  fn takes the average-velocity convention of the mean_flow family: fn(params, z, t, t2=t - d)."""
  return average_velocity_errors(fn, params, gmm, buckets, seed, num_per_bucket,
                                 prefix="shortcut_error")
