"""Average-velocity models on the linear path z_t = (1 - t) x + t e (t = 1 noise, t = 0 data):
MeanFlow (Geng, Deng, Bai, Kolter, He 2025) and shortcut models (Frans et al. 2025, with time
reversed to this convention) learn the same object,

  u(z_t, r, t) = (1 / (t - r)) integral_r^t v(z_s, s) ds,   so   z_r = z_t - (t - r) u(z_t, r, t)

(MeanFlow Eq. 1-3; a shortcut s(z_t, t, d) is u(z_t, t - d, t)). The backbone conditions on two
times: c_noise = t and c_noise_2 = t - r (MeanFlow's best embedding, its Table 1a "(t, t - r)"; the
shortcut model's step size d). Sampling takes any decreasing list of times from 1: spec
('mf', times), each step z <- z - (t - r) u(z, r, t), the last one to r = 0 (1 step: times = (1,)).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax.arrays import bcast
from cmjax.families.base import ConsistencyFamily

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class MeanFlowPreconditioner:
  """u(z, r, t) = F(z, c_noise = t, c_noise_2 = t - r); called without r, the instantaneous
  velocity u(z, t, t) = v(z, t)."""

  def __call__(self, net, x: Array, t: Array, r: Array | None = None) -> Array:
    """x (B, ...), t (B,), r (B,) or None -> u (B, ...)."""
    r = t if r is None else r
    return net(x, t, t - r).astype(x.dtype)


def mean_flow_sample(u_fn, params, z: Array, times) -> Array:
  """z at time 0 from z at times[0] by the steps times[0] > times[1] > ... > 0:
  z <- z - (t - r) u(z, r, t) (MeanFlow Alg. 2 for one step, its multi-step form otherwise).
  u_fn(params, z (B, ...), t (B,), t2=r (B,)); times: (S,) decreasing, times[0] <= 1."""
  times = jnp.concatenate([jnp.asarray(times, jnp.float32).reshape(-1), jnp.zeros((1,))])
  b = z.shape[0]
  for i in range(times.shape[0] - 1):
    t, r = jnp.full((b,), times[i]), jnp.full((b,), times[i + 1])
    z = z - bcast(t - r, z) * u_fn(params, z, t, t2=r)
  return z


class MeanFlowFamily(ConsistencyFamily):
  """Average-velocity models (MeanFlow, shortcut): 1 or more steps from t = 1."""
  name = "mean_flow"
  spec_kinds = ("mf",)
  time_name = "flow times"
  num_times = 2

  def preconditioner(self, param):
    return MeanFlowPreconditioner()

  def level_range(self, param) -> tuple:
    return (0.0, 1.0)

  def make_sample_fn(self, spec, model_fn, param):
    return lambda params, z, key, start: mean_flow_sample(model_fn, params, z, spec[1])

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    """One step of the average velocity from (z_t, t) to 0, with z_t = x_sigma / (1 + sigma) and
    t = sigma / (1 + sigma) (EDM time onto the linear path)."""
    def f(params, x, s):
      t = s / (1.0 + s)
      z = x / bcast(1.0 + s, x)
      return z - bcast(t, z) * model_fn(params, z, t, t2=jnp.zeros_like(t))
    return f


MEAN_FLOW = MeanFlowFamily()
FAMILIES = (MEAN_FLOW,)
