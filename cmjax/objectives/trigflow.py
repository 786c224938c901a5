"""TrigFlow diffusion pretraining (Lu & Song 2024, Sec. 3 and 4.4): the teacher of sCD.

x_t = cos(t) x + sin(t) z, z ~ N(0, sd^2 I), t = arctan(exp(tau)/sd), tau ~ N(Pm, Ps^2);
the network predicts the velocity v_t = dx_t/dt = cos(t) z - sin(t) x as sd F(x_t/sd, t):
  loss = exp(w(t)) / D ||F - v_t / sd||^2 - w(t)   (adaptive weight, sCM Sec. 4.4),
or the plain ||F - v_t/sd||^2 / D. Its probability-flow ODE is dx_t/dt = sd F; sample it with
`sampling.trigflow_ode_sample`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax import schedules
from cmjax.families.trigflow import TRIGFLOW_DIFFUSION
from cmjax.objectives.adaptive_weight import init_adaptive_weight, weighted_loss
from cmjax.objectives.common import ObjectiveBase, require, bcast, per_example_dims, per_example_normal, split_keys

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TrigFlowObjective(ObjectiveBase):
  """TrigFlow velocity-prediction loss. p_mean, p_std: the tau proposal (sCM: -1.0, 1.4)."""
  p_mean: float = -1.0
  p_std: float = 1.4
  adaptive_weight: bool = True
  sigma_data: float = 0.5
  family = TRIGFLOW_DIFFUSION

  def __post_init__(self):
    require(self.p_std > 0, f"p_std must be positive, got {self.p_std}")

  def init_aux(self, key: Array) -> dict:
    return init_adaptive_weight(key) if self.adaptive_weight else {}

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example loss. model_fn returns F; x: (B, ...); keys: (B,); extra: 'aux'.

    Returns (loss (B,), {'t', 'w', 'mse'} of (B,)).
    """
    del step
    extra = extra or {}
    sd = self.sigma_data
    t_keys, z_keys, d_keys = split_keys(keys, 3)
    t = jax.vmap(lambda k: schedules.trigflow_time_samples(k, (), self.p_mean, self.p_std, sd))(t_keys)
    z = sd * per_example_normal(z_keys, x.shape[1:])
    cos, sin = bcast(jnp.cos(t), x), bcast(jnp.sin(t), x)
    v = cos * z - sin * x
    F = model_fn(params, cos * x + sin * z, t, d_keys)
    mse = jnp.sum(jnp.square((F - v / sd).reshape(x.shape[0], -1)), axis=-1) / per_example_dims(x)
    loss, w = weighted_loss(extra.get("aux", {}), t, mse, self.adaptive_weight)
    return loss, {"t": t, "w": w, "mse": mse}


METHODS = {"trigflow": TrigFlowObjective}
