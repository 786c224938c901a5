"""How far a trained model is from the TRUE consistency function of the 8-Gaussian toy data.

consistency error(bucket) = E ||f_theta(x_sigma, sigma) - f*(x_sigma, sigma)||, x_sigma = x0 + sigma z,
x0 ~ the mixture, ln sigma uniform within the bucket, f* the exact PF-ODE end point
(`cmjax.exact_gmm`). Every model is measured in the same EDM coordinates, through its family's
`consistency_fn` (`cmjax.families`): a consistency model's f itself (mapped onto TrigFlow time for
sCT/sCD), a diffusion model's own ODE from (x, sigma) to eps (eval.ode_steps steps).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.exact_gmm import consistency_function
from cmjax.families.edm_time import EDM_CONSISTENCY, EDM_DIFFUSION
from cmjax.families.trigflow import TRIGFLOW_CONSISTENCY, TRIGFLOW_DIFFUSION

BUCKETS = (("small", 0.002, 0.1), ("medium", 0.1, 1.0), ("large", 1.0, 80.0))


def model_consistency_fn(model_fn, parametrization: str, diffusion: bool, param_config,
                         ode_steps: int = 18):
  """fn(params, x (B, ...), sigma (B,)) -> the model's estimate of f*(x, sigma), (B, ...) (jit-able).

  The family's `consistency_fn` (`cmjax.families`), named by its preconditioner ('cm', 'edm',
  'trigflow') and whether it is a diffusion model; a run has `built.family` at hand directly.
  """
  family = {("cm", False): EDM_CONSISTENCY, ("edm", True): EDM_DIFFUSION,
            ("trigflow", False): TRIGFLOW_CONSISTENCY, ("trigflow", True): TRIGFLOW_DIFFUSION}.get(
                (parametrization, bool(diffusion)))
  if family is None:
    raise ValueError(f"no model family with parametrization {parametrization!r} and "
                     f"diffusion={diffusion}")
  return family.consistency_fn(model_fn, param_config, ode_steps)


def consistency_errors(fn, params, gmm, num_per_bucket: int = 512, seed: int = 0,
                       sigma_end: float = 0.002) -> dict:
  """{'consistency_error_<bucket>': mean ||fn(params, x, sigma) - f*(x, sigma)||} for BUCKETS.

  fn: from `model_consistency_fn` (jitted here). Deterministic given `seed`.
  """
  jfn = jax.jit(fn)
  rng = np.random.default_rng([seed, 7])
  out = {}
  for name, lo, hi in BUCKETS:
    sigma = np.exp(rng.uniform(math.log(lo), math.log(hi), num_per_bucket))
    x = gmm.sample(num_per_bucket, rng) + sigma[:, None] * rng.standard_normal((num_per_bucket, 2))
    exact = consistency_function(gmm, x, sigma, sigma_end, steps=128)  # RK4 error ~1e-5 << model error
    pred = np.asarray(jfn(params, jnp.asarray(x, jnp.float32), jnp.asarray(sigma, jnp.float32)))
    out[f"consistency_error_{name}"] = float(np.mean(np.linalg.norm(pred - exact, axis=-1)))
  return out
