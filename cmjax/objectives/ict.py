"""iCT: improved consistency training (Song & Dhariwal 2023, "Improved Techniques for
Training Consistency Models").

Per example, with N = N(k) = min(s0 2^floor(k/K'), s1) + 1 (Sec. 3.4) on the Karras grid:
  i ~ p(i) ∝ erf((ln s_{i+1} - Pm)/(sqrt 2 Ps)) - erf((ln s_i - Pm)/(sqrt 2 Ps))   (Sec. 3.5),
  x_{i+1} = x + s_{i+1} z,  x_i = x + s_i z  (same z),
  loss = lambda(s_i) d(f_theta(x_{i+1}, s_{i+1}), stopgrad f_theta(x_i, s_i)),
  lambda(s_i) = 1 / (s_{i+1} - s_i)                                               (Sec. 3.2),
  d = pseudo-Huber sqrt(||a - b||^2 + c^2) - c over the WHOLE example,
      c = 0.00054 sqrt(D) (D = dimensions of one example; 3072 on CIFAR-10)       (Sec. 3.3).
The teacher is the online network under stop-gradient (no EMA target, Sec. 3.2), with the
student's dropout mask. EMA parameters are kept for sampling only.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from cmjax import distances, schedules
from cmjax.objectives.common import (ObjectiveBase, require, bcast, per_example_dims, per_example_normal,
                                     split_keys)
from cmjax.objectives.consistency_pair import consistency_pair_distance

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ICTObjective(ObjectiveBase):
  """Improved consistency training.

  Attributes:
    s0, s1, total_steps: the N(k) doubling curriculum (10, 1280, K).
    p_mean, p_std: discrete-lognormal index sampling (-1.1, 2.0).
    c_per_sqrt_dim: pseudo-Huber c = c_per_sqrt_dim * sqrt(D) (0.00054).
    rho: Karras grid rho (7).
  """
  s0: int = 10
  s1: int = 1280
  total_steps: int = 400_000
  p_mean: float = -1.1
  p_std: float = 2.0
  c_per_sqrt_dim: float = 0.00054
  rho: float = 7.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0

  def __post_init__(self):
    require(1 <= self.s0 <= self.s1, f"s0 and s1 must satisfy 1 <= s0 <= s1, got {self.s0}, {self.s1}")
    require(self.total_steps > 0, f"total_steps must be positive, got {self.total_steps}")
    require(self.p_std > 0, f"p_std must be positive, got {self.p_std}")
    require(self.c_per_sqrt_dim >= 0, f"c_per_sqrt_dim must be >= 0, got {self.c_per_sqrt_dim}")

  def num_scales(self, step: Array) -> Array:
    """N(k), int32."""
    return schedules.ict_num_scales_schedule(self.s0, self.s1, self.total_steps)(step)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example iCT loss. x: (B, ...), keys: (B,). Returns (loss (B,), metrics of (B,))."""
    del extra
    i_keys, z_keys, d_keys = split_keys(keys, 3)
    big_n = self.num_scales(step)
    grid = schedules.karras_sigma_at(jnp.arange(max(self.s0, self.s1) + 1), big_n,
                                     self.sigma_min, self.sigma_max, self.rho)
    logits = schedules.discrete_lognormal_logits(grid, self.p_mean, self.p_std, big_n)
    i = jax.vmap(lambda k: jax.random.categorical(k, logits))(i_keys)
    t_lo, t_hi = grid[i], grid[i + 1]
    z = per_example_normal(z_keys, x.shape[1:])
    x_hi, x_lo = x + bcast(t_hi, x) * z, x + bcast(t_lo, x) * z
    c = self.c_per_sqrt_dim * math.sqrt(per_example_dims(x))
    dist = consistency_pair_distance(model_fn, params, params, x_hi, t_hi, x_lo, t_lo, d_keys,
                                     lambda a, b: distances.pseudo_huber(a, b, c))
    loss = dist / (t_hi - t_lo)
    return loss, {"t": t_hi, "distance": dist, "num_scales": big_n + 0.0 * t_hi}


METHODS = {"ict": ICTObjective}
