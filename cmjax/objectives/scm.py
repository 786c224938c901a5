"""sCT and sCD: continuous-time consistency models in TrigFlow (Lu & Song 2024, "Simplifying,
Stabilizing and Scaling Continuous-Time Consistency Models", Algorithm 1 and Sec. 4).

x_t = cos(t) x + sin(t) z, z ~ N(0, sd^2 I); f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t/sd, t)
(`parametrization.TrigFlowPreconditioner` gives F). Per example:
  t = arctan(exp(tau) / sd), tau ~ N(Pm, Ps^2),
  dx_t/dt = cos(t) z - sin(t) x                     (sCT: the conditional velocity)
          = sd F_teacher(x_t/sd, t)                 (sCD: a pretrained TrigFlow diffusion model),
  F-, dF-/dt = jax.jvp of the stop-gradient network along (dx_t/dt, 1) (same dropout mask),
  g = -cos^2(t) (sd F- - dx_t/dt) - r cos(t) sin(t) (x_t + sd dF-/dt),  r = min(1, k / warmup),
  g <- g / (||g|| + c)                               (tangent normalisation, c = 0.1),
  loss = exp(w(t)) / D ||F_theta - F- - g||^2 - w(t)  (w: learned adaptive weight).
The gradient of this loss at theta = theta- is -2 exp(w)/D (dF/dtheta)^T g: it moves F along
g = cos(t) df-/dt, the continuous-time consistency gradient (sCM Eq. 11 rearranged).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from cmjax import schedules
from cmjax.distances import safe_sqrt
from cmjax.families.trigflow import TRIGFLOW_CONSISTENCY
from cmjax.objectives.adaptive_weight import init_adaptive_weight, weighted_loss
from cmjax.objectives.common import ObjectiveBase, require, bcast, per_example_dims, per_example_normal, split_keys

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SCMObjective(ObjectiveBase):
  """sCT (distill=False) or sCD (distill=True, with a 'trigflow' teacher).

  Attributes:
    p_mean, p_std: proposal of tau = ln(sd tan t) (CIFAR-10: -1.0, 1.4; ImageNet-64: -0.8, 1.6).
    tangent_warmup_steps: r rises linearly from 0 to 1 over these steps (10k in the paper).
    tangent_norm_c: c of the tangent normalisation (0.1; <= 0 turns it off).
    adaptive_weight: learn w(t) (True) or use w = 0.
    t_min: clip t to [t_min, pi/2] (the proposal already avoids 0; guards the jvp).
    teacher_fn: sCD's teacher F (set by `cmjax.run`). sCD's config section also holds
      scd.teacher_workdir and scd.init_from_teacher (start from the teacher's EMA weights, as in
      the paper), read by `cmjax.run` only.
  """
  p_mean: float = -1.0
  p_std: float = 1.4
  tangent_warmup_steps: int = 10_000
  tangent_norm_c: float = 0.1
  adaptive_weight: bool = True
  distill: bool = False
  t_min: float = 1e-4
  sigma_data: float = 0.5
  teacher_fn: Optional[Callable] = dataclasses.field(default=None, compare=False, repr=False)
  family = TRIGFLOW_CONSISTENCY

  def __post_init__(self):
    require(self.p_std > 0, f"p_std must be positive, got {self.p_std}")
    require(self.tangent_warmup_steps >= 0, f"tangent_warmup_steps must be >= 0, got "
            f"{self.tangent_warmup_steps}")
    require(0 < self.t_min < jnp.pi / 2, f"t_min must be in (0, pi/2), got {self.t_min}")

  @property
  def teacher_method(self):
    return "trigflow" if self.distill else None

  def init_aux(self, key: Array) -> dict:
    return init_adaptive_weight(key) if self.adaptive_weight else {}

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example sCT/sCD loss. model_fn returns F; x: (B, ...), keys: (B,).

    extra: 'aux' (adaptive weight params) and, for sCD, 'teacher'.
    Returns (loss (B,), metrics {'t', 'w', 'mse', 'tangent_norm'} of (B,)).
    """
    extra = extra or {}
    sd = self.sigma_data
    t_keys, z_keys, d_keys = split_keys(keys, 3)
    t = jax.vmap(lambda k: schedules.trigflow_time_samples(k, (), self.p_mean, self.p_std, sd))(t_keys)
    t = jnp.clip(t, self.t_min, jnp.pi / 2)
    z = sd * per_example_normal(z_keys, x.shape[1:])
    cos, sin = bcast(jnp.cos(t), x), bcast(jnp.sin(t), x)
    x_t = cos * x + sin * z
    if self.distill:
      if self.teacher_fn is None or extra.get("teacher") is None:
        raise ValueError("sCD needs a teacher: set teacher_fn and pass extra['teacher']")
      dxt_dt = sd * jax.lax.stop_gradient(self.teacher_fn(extra["teacher"], x_t, t))
    else:
      dxt_dt = cos * z - sin * x
    frozen = jax.lax.stop_gradient(params)
    f_minus = lambda xx, tt: model_fn(frozen, xx, tt, d_keys)
    F_minus, dF_dt = jax.jvp(f_minus, (x_t, t), (dxt_dt, jnp.ones_like(t)))
    r = schedules.linear_warmup(self.tangent_warmup_steps)(step)
    g = -cos**2 * (sd * F_minus - dxt_dt) - r * cos * sin * (x_t + sd * dF_dt)
    g_norm = safe_sqrt(jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), axis=-1))
    if self.tangent_norm_c > 0:
      g = g / bcast(g_norm + self.tangent_norm_c, x)
    g = jax.lax.stop_gradient(g)
    F = model_fn(params, x_t, t, d_keys)
    resid = (F - jax.lax.stop_gradient(F_minus) - g).reshape(x.shape[0], -1)
    mse = jnp.sum(jnp.square(resid), axis=-1) / per_example_dims(x)
    loss, w = weighted_loss(extra.get("aux", {}), t, mse, self.adaptive_weight)
    return loss, {"t": t, "w": w, "mse": mse, "tangent_norm": g_norm}


# sCT and sCD share the objective; sCD's section also holds its teacher settings (read by
# `cmjax.run`).
METHODS = {"sct": functools.partial(SCMObjective, distill=False),
           "scd": functools.partial(SCMObjective, distill=True)}
SETUP_FIELDS = {"scd": {"teacher_workdir": "", "init_from_teacher": True}}
