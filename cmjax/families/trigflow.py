"""Families in TrigFlow time (sCM, Lu & Song 2024): x_t = cos(t) x0 + sin(t) z, z ~ N(0, sd^2 I),
t in [0, pi/2]; the backbone gives F (`parametrization.TrigFlowPreconditioner`).

  trigflow_consistency  f(x_t, t) = cos(t) x_t - sin(t) sd F (sCM Eq. 8; sct, scd); sampled by
                        sCM Alg. 2, spec ('trigflow_cm', times), 1 step from pi/2.
  trigflow_diffusion    velocity model sd F ~ dx_t/dt (trigflow); sampled by DDIM steps of the
                        TrigFlow ODE, spec ('trigflow_ode', num_steps).
EDM time maps onto TrigFlow time by t = arctan(sigma / sd), x_t = cos(t) x_sigma.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from cmjax import sampling
from cmjax.families.base import ConsistencyFamily, DiffusionFamily
from cmjax.arrays import bcast
from cmjax.parametrization import TrigFlowPreconditioner, trigflow_consistency


def _to_trigflow(x, s, sigma_data: float):
  """EDM (x_sigma (B, ...), sigma (B,)) -> TrigFlow (x_t, t)."""
  t = jnp.arctan(s / sigma_data)
  return bcast(jnp.cos(t), x) * x, t


class TrigFlowConsistency(ConsistencyFamily):
  """sCM consistency models (levels = TrigFlow times, 1 step from pi/2)."""
  name = "trigflow_consistency"
  spec_kinds = ("trigflow_cm",)
  time_name = "TrigFlow times"

  def preconditioner(self, param):
    return TrigFlowPreconditioner(param.sigma_data)

  def level_range(self, param) -> tuple:
    return (0.0, math.pi / 2)

  def make_sample_fn(self, spec, model_fn, param):
    return lambda params, z, key, start: sampling.trigflow_multistep_sample(
        model_fn, params, z, spec[1], key, param.sigma_data, first_index=start)

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    def f(params, x, s):
      xt, t = _to_trigflow(x, s, param.sigma_data)
      return trigflow_consistency(xt, t, model_fn(params, xt, t), param.sigma_data)
    return f


class TrigFlowDiffusion(DiffusionFamily):
  """TrigFlow diffusion models, sampled by DDIM steps on the Karras grid mapped to TrigFlow time."""
  name = "trigflow_diffusion"
  spec_kinds = ("trigflow_ode",)
  time_name = "TrigFlow times"

  def preconditioner(self, param):
    return TrigFlowPreconditioner(param.sigma_data)

  def ode_spec(self, config, steps: int) -> tuple:
    return ("trigflow_ode", int(steps))

  def make_sample_fn(self, spec, model_fn, param):
    times = sampling.trigflow_ode_times(spec[1], param.sigma_min, param.sigma_max, param.sigma_data)
    return lambda params, z, key, start: sampling.trigflow_ode_sample(model_fn, params, z, times,
                                                                      param.sigma_data)

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    def g(params, x, s):
      xt, t = _to_trigflow(x, s, param.sigma_data)
      return sampling.trigflow_ode_from(model_fn, params, xt, t, ode_steps, param.sigma_min,
                                        param.sigma_data)
    return g


TRIGFLOW_CONSISTENCY = TrigFlowConsistency()
TRIGFLOW_DIFFUSION = TrigFlowDiffusion()
FAMILIES = (TRIGFLOW_CONSISTENCY, TRIGFLOW_DIFFUSION)
