"""Flow matching / rectified flow pretraining (Lipman et al. 2023, Eq. 23 with the linear
"optimal transport" path; Liu et al. 2023, Eq. 1): a diffusion teacher of the flow family.

Per example: t ~ logit-normal(p_mean, p_std) (t = sigmoid(n), n ~ N(p_mean, p_std^2); Esser et
al. 2024) or U(0, 1); e ~ N(0, I); z_t = (1 - t) x + t e;
  loss = ||v_theta(z_t, t) - (e - x)||^2 / D        (the conditional velocity target).
Sample it with the flow ODE (`cmjax.families.flow`), Euler or Heun.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax.families.flow import FLOW_MATCHING
from cmjax.objectives.common import (ObjectiveBase, bcast, per_example_dims, per_example_normal,
                                     require, split_keys)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class FMObjective(ObjectiveBase):
  """Flow-matching loss. time_sampling 'logit_normal' (p_mean, p_std; SD3's (0, 1) default) or
  'uniform' (rectified flow)."""
  time_sampling: str = "logit_normal"
  p_mean: float = 0.0
  p_std: float = 1.0
  family = FLOW_MATCHING

  def __post_init__(self):
    require(self.time_sampling in ("logit_normal", "uniform"),
            f"time_sampling {self.time_sampling!r} is unknown; known: 'logit_normal', 'uniform'")
    require(self.p_std > 0, f"p_std must be positive, got {self.p_std}")

  def sample_t(self, keys: Array) -> Array:
    """t (B,) in (0, 1) from (B,) keys."""
    if self.time_sampling == "uniform":
      return jax.vmap(lambda k: jax.random.uniform(k, ()))(keys)
    n = jax.vmap(lambda k: jax.random.normal(k, ()))(keys)
    return jax.nn.sigmoid(self.p_mean + self.p_std * n)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example loss. model_fn(params, z (B, ...), t (B,), dropout_keys) -> v; x: (B, ...)
    clean data; keys: (B,). Returns (loss (B,), {'t', 'mse'} of (B,))."""
    del step, extra
    t_keys, e_keys, d_keys = split_keys(keys, 3)
    t = self.sample_t(t_keys)
    e = per_example_normal(e_keys, x.shape[1:])
    z_t = bcast(1.0 - t, x) * x + bcast(t, x) * e
    v = model_fn(params, z_t, t, d_keys)
    mse = jnp.sum(jnp.square((v - (e - x)).reshape(x.shape[0], -1)), axis=-1) / per_example_dims(x)
    return mse, {"t": t, "mse": mse}


METHODS = {"fm": FMObjective}
