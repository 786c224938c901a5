"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): the linear path

  z_t = (1 - t) x + t e,  e ~ N(0, I),  t in [0, 1],   velocity v = dz_t/dt = e - x.

The backbone predicts v directly: v_theta(z_t, t) = F(z_t, c_noise = t) (`FlowPreconditioner`;
the backbone's time_scale spreads t over its embedding, e.g. 1000 t as DiT's timesteps). Samples
follow the probability-flow ODE dz/dt = v from t = 1 (pure noise e) to t = 0 by Euler or Heun
steps on a uniform grid, spec ('fm_ode', num_steps, solver).

EDM time maps onto it exactly: x_sigma = x + sigma e = z_t / (1 - t) with t = sigma / (1 + sigma),
so the ground-truth consistency error of a flow model is its own ODE from (z_t, t) to 0.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax.arrays import bcast
from cmjax.families.base import DiffusionFamily

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FlowPreconditioner:
  """v_theta(z_t, t) = F(z_t, t): the backbone sees the state and t itself (no scalings)."""

  def __call__(self, net, x: Array, t: Array) -> Array:
    """v for x (B, ...) at times t (B,) in [0, 1]."""
    return net(x, t).astype(x.dtype)


def flow_ode(v_fn, params, z: Array, times: Array, solver: str = "heun") -> Array:
  """Integrates dz/dt = v_fn(params, z, t) along `times` (S+1,) or per example (S+1, B), as one
  lax.scan; Euler, or Heun (trapezoidal: the velocity at both ends of each step). Returns z at
  times[-1]."""
  if solver not in ("heun", "euler"):
    raise ValueError(f"unknown ODE solver {solver!r}; known: 'heun', 'euler'")
  b = z.shape[0]
  times = jnp.broadcast_to(times.reshape(times.shape[0], -1), (times.shape[0], b))

  def step(x, ab):
    a, c = ab
    d = v_fn(params, x, a)
    x_next = x + bcast(c - a, x) * d
    if solver == "euler":
      return x_next, None
    return x + bcast(c - a, x) * 0.5 * (d + v_fn(params, x_next, c)), None

  return jax.lax.scan(step, z, (times[:-1], times[1:]))[0]


class FlowMatching(DiffusionFamily):
  """Flow-matching velocity models, sampled by their ODE from t = 1 to 0."""
  name = "flow_matching"
  spec_kinds = ("fm_ode",)
  time_name = "flow times"

  def preconditioner(self, param):
    return FlowPreconditioner()

  def ode_spec(self, config, steps: int) -> tuple:
    return ("fm_ode", int(steps), config.eval.ode_solver)

  def make_sample_fn(self, spec, model_fn, param):
    times = jnp.linspace(1.0, 0.0, spec[1] + 1)
    return lambda params, z, key, start: flow_ode(model_fn, params, z, times, spec[2])

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    def f(params, x, s):
      t = s / (1.0 + s)                                    # EDM sigma -> flow time
      times = t[None] * jnp.linspace(1.0, 0.0, ode_steps + 1)[:, None]   # (S+1, B)
      return flow_ode(model_fn, params, x / bcast(1.0 + s, x), times, "heun")
    return f

  def level_range(self, param) -> tuple:
    return (0.0, 1.0)


FLOW_MATCHING = FlowMatching()
FAMILIES = (FLOW_MATCHING,)
