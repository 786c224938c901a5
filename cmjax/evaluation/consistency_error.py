"""How far a trained model is from the TRUE consistency function of the 8-Gaussian toy data.

consistency error(bucket) = E ||f_theta(x_sigma, sigma) - f*(x_sigma, sigma)||, x_sigma = x0 + sigma z,
x0 ~ the mixture, ln sigma uniform within the bucket, f* the exact PF-ODE end point
(`cmjax.exact_gmm`). Every kind of model is measured in the same EDM coordinates:
  'cm' consistency models (cd, ct, ict, ect):  f_theta(x, sigma) itself;
  TrigFlow consistency models (sct, scd):       f = cos t x' - sin t sd F(x', t) at
                                                t = arctan(sigma / sd), x' = cos(t) x_sigma;
  diffusion models (edm, trigflow):             their own ODE from (x, sigma) to eps (18 steps).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import sampling
from cmjax.parametrization import trigflow_consistency

BUCKETS = (("small", 0.002, 0.1), ("medium", 0.1, 1.0), ("large", 1.0, 80.0))


def model_consistency_fn(model_fn, parametrization: str, diffusion: bool, param_config,
                         ode_steps: int = 18):
  """fn(params, x (B, ...), sigma (B,)) -> the model's estimate of f*(x, sigma), (B, ...) (jit-able)."""
  p = param_config
  if not diffusion and parametrization == "cm":
    return lambda params, x, s: model_fn(params, x, s)
  if not diffusion and parametrization == "trigflow":
    def f(params, x, s):
      t = jnp.arctan(s / p.sigma_data)
      xt = jnp.cos(t).reshape((-1,) + (1,) * (x.ndim - 1)) * x
      return trigflow_consistency(xt, t, model_fn(params, xt, t), p.sigma_data)
    return f
  if parametrization == "edm":
    return lambda params, x, s: sampling.edm_ode_from(model_fn, params, x, s, ode_steps, p.sigma_min)
  def g(params, x, s):
    t = jnp.arctan(s / p.sigma_data)
    xt = jnp.cos(t).reshape((-1,) + (1,) * (x.ndim - 1)) * x
    return sampling.trigflow_ode_from(model_fn, params, xt, t, ode_steps, p.sigma_min, p.sigma_data)
  return g


def consistency_errors(fn, params, gmm, num_per_bucket: int = 512, seed: int = 0,
                       sigma_end: float = 0.002) -> dict:
  """{'consistency_error_<bucket>': mean ||fn(params, x, sigma) - f*(x, sigma)||} for BUCKETS.

  fn: from `model_consistency_fn` (jitted here). Deterministic given `seed`.
  """
  from cmjax.exact_gmm import consistency_function

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
