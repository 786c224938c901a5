"""CD: consistency distillation (Song et al. 2023, Algorithm 2; Appendix C).

Per example: n ~ U{1, ..., N-1} on the increasing Karras grid t_1 = eps < ... < t_N = T,
  x_{n+1} = x + t_{n+1} z,
  x_hat_n = one Heun (or Euler) step of the TEACHER's probability-flow ODE from t_{n+1} to t_n,
  loss = d(f_theta(x_{n+1}, t_{n+1}), f_theta-(x_hat_n, t_n))      (lambda = 1),
  theta- <- stopgrad(mu theta- + (1 - mu) theta) after every update (constant mu).
CIFAR-10 (official code): N = 18, d = LPIPS, mu = 0 (theta- = the online parameters),
Heun. ImageNet-64: N = 40, mu = 0.95. The teacher is an EDM denoiser (objective 'edm');
`cmjax.run` loads it from `cd.teacher_workdir` and refuses to start without it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from cmjax import sampling, schedules
from cmjax.objectives.common import ObjectiveBase, check_distance, require, bcast, make_distance, per_example_normal, split_keys
from cmjax.objectives.consistency_pair import consistency_pair_distance

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CDObjective(ObjectiveBase):
  """Consistency distillation.

  Attributes:
    num_scales: N, points of the Karras grid (rho = `rho`) between sigma_min and sigma_max.
    solver: 'heun' or 'euler', the teacher's ODE step.
    mu: decay of the target network theta- (0: theta- = theta after each update).
    distance, c: d(a, b) by name (`common.make_distance`) and the pseudo-Huber c.
    teacher_fn: D(teacher_params, x, s) (set by `cmjax.run`; eval mode).
    lpips_resize: the size LPIPS inputs are resized to (0: none), when distance='lpips'.
  Config-only settings (`SETUP_FIELDS`, read by `cmjax.run`, never by the loss): cd.teacher_workdir
  (the EDM run to distil), cd.init_from_teacher (start from the teacher's EMA weights, CM paper),
  cd.exact_teacher (the exact denoiser of the 2-D mixture, `exact_gmm`), cd.lpips_weights (.npz
  from scripts/convert_lpips_weights.py).
  """
  num_scales: int = 18
  solver: str = "heun"
  mu: float = 0.0
  distance: str = "l2_squared"
  c: float = 0.0
  lpips_resize: int = 224
  rho: float = 7.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  teacher_fn: Optional[Callable] = dataclasses.field(default=None, compare=False, repr=False)
  uses_target = True
  teacher_method = "edm"

  def __post_init__(self):
    require(self.num_scales >= 2, f"num_scales must be >= 2, got {self.num_scales}")
    require(self.solver in ("heun", "euler"), f"solver {self.solver!r} is unknown; known: 'heun', 'euler'")
    require(0.0 <= self.mu < 1.0, f"mu must be in [0, 1), got {self.mu}")
    check_distance(self)

  def target_ema(self, step: Array) -> Array:
    """The constant mu of the target network (CM paper Alg. 2)."""
    return jnp.float32(self.mu) + 0.0 * jnp.asarray(step, jnp.float32)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example CD loss; extra needs 'target' (theta-) and 'teacher' (teacher params).

    x: (B, ...) clean data, keys: (B,) example keys. Returns (loss (B,), metrics of (B,)).
    """
    del step
    if self.teacher_fn is None or extra is None or extra.get("teacher") is None:
      raise ValueError("CD needs a teacher: set teacher_fn and pass extra['teacher']")
    n_keys, z_keys, d_keys = split_keys(keys, 3)
    n = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.num_scales - 1))(n_keys)  # t_n = grid[n]
    grid = lambda i: schedules.karras_sigma_at(i, self.num_scales, self.sigma_min, self.sigma_max, self.rho)
    t_lo, t_hi = grid(n), grid(n + 1)
    x_hi = x + bcast(t_hi, x) * per_example_normal(z_keys, x.shape[1:])
    denoise = lambda v, s: self.teacher_fn(extra["teacher"], v, s)
    x_lo = jax.lax.stop_gradient(sampling.ode_step(denoise, x_hi, t_hi, t_lo, self.solver))
    distance = make_distance(self.distance, self.c, extra.get("distance"), self.lpips_resize)
    dist = consistency_pair_distance(model_fn, params, extra["target"], x_hi, t_hi, x_lo, t_lo,
                                     d_keys, distance)
    return dist, {"t": t_hi, "distance": dist}


METHODS = {"cd": CDObjective}
SETUP_FIELDS = {"cd": {"lpips_weights": "", "teacher_workdir": "", "teacher_file": "",
                       "init_from_teacher": True, "exact_teacher": False}}
