"""Families in EDM time (x_sigma = x0 + sigma z, sigma in [sigma_min, sigma_max]).

  edm_consistency  consistency function f(x, sigma) with f(x, sigma_min) = x (CM paper App. C;
                   cd, ct, ict, ect); sampled by multistep consistency sampling (CM Alg. 1),
                   spec ('cm', sigmas).
  edm_diffusion    EDM denoiser D(x; sigma) (EDM Table 1; edm); sampled by EDM's Heun/Euler ODE
                   (EDM Alg. 1), spec ('edm', num_steps, solver).
"""
from __future__ import annotations

from cmjax import sampling
from cmjax.families.base import ConsistencyFamily, DiffusionFamily
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner


class EDMConsistency(ConsistencyFamily):
  """Consistency models in EDM time (levels = noise levels sigma, 1 step from sigma_max)."""
  name = "edm_consistency"
  spec_kinds = ("cm",)

  def preconditioner(self, param):
    """CM's boundary-shifted preconditioning, or EDM's unshifted one when param.boundary_shift is
    False (ECT on EDM2): ConsistencyPreconditioner(sd, 0) computes EDM's c_skip/c_out/c_in/c_noise."""
    shift = param.get("boundary_shift", True)
    return ConsistencyPreconditioner(param.sigma_data, param.sigma_min if shift else 0.0)

  def level_range(self, param) -> tuple:
    return (float(param.sigma_min), float(param.sigma_max))

  def make_sample_fn(self, spec, model_fn, param):
    return lambda params, z, key, start: sampling.multistep_sample(
        model_fn, params, z, spec[1], key, param.sigma_min, first_index=start)

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    return lambda params, x, s: model_fn(params, x, s)


class EDMDiffusion(DiffusionFamily):
  """EDM denoisers, sampled with EDM's deterministic Heun (or Euler) sampler."""
  name = "edm_diffusion"
  spec_kinds = ("edm",)

  def preconditioner(self, param):
    return EDMPreconditioner(param.sigma_data)

  def ode_spec(self, config, steps: int) -> tuple:
    return ("edm", int(steps), config.eval.ode_solver)

  def make_sample_fn(self, spec, model_fn, param):
    sigmas = sampling.edm_sigmas(spec[1], param.sigma_min, param.sigma_max)
    return lambda params, z, key, start: sampling.edm_sample(model_fn, params, z, sigmas, spec[2])

  def consistency_fn(self, model_fn, param, ode_steps: int = 18):
    return lambda params, x, s: sampling.edm_ode_from(model_fn, params, x, s, ode_steps,
                                                      param.sigma_min)


EDM_CONSISTENCY = EDMConsistency()
EDM_DIFFUSION = EDMDiffusion()
FAMILIES = (EDM_CONSISTENCY, EDM_DIFFUSION)
