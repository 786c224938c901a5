"""The samplers a run reports, by name, and how each is built from a model function.

A spec is a hashable tuple (so jitted samplers are cached per spec):
  ('cm', sigmas)                    consistency model f, `sampling.multistep_sample`
  ('edm', num_steps, solver)        EDM denoiser D, `sampling.edm_sample` (Heun/Euler ODE)
  ('trigflow_cm', times)            TrigFlow consistency model (sCT/sCD), `trigflow_multistep_sample`
  ('trigflow_ode', num_steps)       TrigFlow diffusion model, `trigflow_ode_sample`
"""
from __future__ import annotations

import math

from cmjax import sampling


def named_samplers(config, parametrization: str, diffusion: bool) -> tuple:
  """((name, spec), ...) evaluated at the end of a run: '1step' and '2step' for consistency
  models; 'ode' (eval.ode_steps steps) for diffusion models."""
  p, e = config.param, config.eval
  if diffusion:
    if parametrization == "edm":
      return (("ode", ("edm", int(e.ode_steps), e.ode_solver)),)
    return (("ode", ("trigflow_ode", int(e.ode_steps))),)
  if parametrization == "trigflow":
    return (("1step", ("trigflow_cm", (math.pi / 2,))),
            ("2step", ("trigflow_cm", (math.pi / 2, float(e.t_mid)))))
  return (("1step", ("cm", (float(p.sigma_max),))),
          ("2step", ("cm", (float(p.sigma_max), float(e.t_mid)))))


def make_sample_fn(spec: tuple, model_fn, param_config):
  """fn(params, z (B, ...), renoise_key, first_index) -> (B, ...) samples for `spec`."""
  p = param_config
  kind = spec[0]
  if kind == "cm":
    return lambda params, z, key, start: sampling.multistep_sample(
        model_fn, params, z, spec[1], key, p.sigma_min, first_index=start)
  if kind == "edm":
    sigmas = sampling.edm_sigmas(spec[1], p.sigma_min, p.sigma_max)
    return lambda params, z, key, start: sampling.edm_sample(model_fn, params, z, sigmas, spec[2])
  if kind == "trigflow_cm":
    return lambda params, z, key, start: sampling.trigflow_multistep_sample(
        model_fn, params, z, spec[1], key, p.sigma_data, first_index=start)
  if kind == "trigflow_ode":
    times = sampling.trigflow_ode_times(spec[1], p.sigma_min, p.sigma_max, p.sigma_data)
    return lambda params, z, key, start: sampling.trigflow_ode_sample(model_fn, params, z, times,
                                                                      p.sigma_data)
  raise ValueError(f"unknown sampler spec {spec!r}")
