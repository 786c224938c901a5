"""CT: consistency training (Song et al. 2023, Algorithm 3; Appendix C).

Per example: n ~ U{1, ..., N(k)-1} on the increasing Karras grid of N(k) points,
  x_{n+1} = x + t_{n+1} z,  x_n = x + t_n z   (the SAME z: no teacher),
  loss = d(f_theta(x_{n+1}, t_{n+1}), f_theta-(x_n, t_n))      (lambda = 1),
  theta- <- stopgrad(mu(k) theta- + (1 - mu(k)) theta),
with the curricula N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1 and
mu(k) = exp(s0 ln(mu0) / N(k)) (`schedules.ct_num_scales_schedule`, `ct_target_ema_schedule`).
CIFAR-10: s0 = 2, s1 = 150, mu0 = 0.9, K = 800k, d = LPIPS.

mu(k)'s divisor: the paper prints N(k); both official repositories use N(k) - 1. We default
to 'official' because the published CT results were produced by that code; 'paper' gives the
printed formula.
"""
from __future__ import annotations

import dataclasses
import jax

from cmjax import schedules
from cmjax.objectives.common import ObjectiveBase, check_distance, require, bcast, make_distance, per_example_normal, split_keys
from cmjax.objectives.consistency_pair import consistency_pair_distance

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class CTObjective(ObjectiveBase):
  """Consistency training.

  Attributes:
    s0, s1, total_steps: N(k) curriculum (K = total_steps; N is held at s1 + 1 after K).
    mu0, mu_divisor: target EMA mu(k) = exp(s0 ln mu0 / N(k)) ('paper') or / (N(k) - 1)
      ('official', default).
    distance, c: d(a, b) by name and the pseudo-Huber c; rho: the grid's rho.
    lpips_resize: the size LPIPS inputs are resized to, when distance='lpips' (the weights file,
      ct.lpips_weights, is a config-only setting read by `cmjax.run`).
  """
  s0: int = 2
  s1: int = 150
  total_steps: int = 800_000
  mu0: float = 0.9
  mu_divisor: str = "official"
  distance: str = "l2_squared"
  c: float = 0.0
  lpips_resize: int = 224
  rho: float = 7.0
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  uses_target = True

  def __post_init__(self):
    require(1 <= self.s0 <= self.s1, f"s0 and s1 must satisfy 1 <= s0 <= s1, got {self.s0}, {self.s1}")
    require(self.total_steps > 0, f"total_steps must be positive, got {self.total_steps}")
    require(0.0 < self.mu0 < 1.0, f"mu0 must be in (0, 1), got {self.mu0}")
    require(self.mu_divisor in ("paper", "official"),
            f"mu_divisor {self.mu_divisor!r} is unknown; known: 'paper', 'official'")
    require(self.s0 >= 2 or self.mu_divisor == "paper",
            "s0 must be >= 2 with mu_divisor 'official' (it divides by N(k) - 1)")
    check_distance(self)

  def num_scales(self, step: Array) -> Array:
    """N(k), int32."""
    return schedules.ct_num_scales_schedule(self.s0, self.s1, self.total_steps)(step)

  def target_ema(self, step: Array) -> Array:
    """mu(k) (see the module docstring for the divisor)."""
    return schedules.ct_target_ema_schedule(self.s0, self.s1, self.total_steps, self.mu0,
                                            self.mu_divisor)(step)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example CT loss; extra needs 'target' (theta-). x: (B, ...), keys: (B,).

    Returns (loss (B,), metrics {'t', 'distance', 'num_scales'} of (B,)).
    """
    n_keys, z_keys, d_keys = split_keys(keys, 3)
    big_n = self.num_scales(step)
    n = jax.vmap(lambda k: jax.random.randint(k, (), 0, big_n - 1))(n_keys)
    grid = lambda i: schedules.karras_sigma_at(i, big_n, self.sigma_min, self.sigma_max, self.rho)
    t_lo, t_hi = grid(n), grid(n + 1)
    z = per_example_normal(z_keys, x.shape[1:])
    x_hi, x_lo = x + bcast(t_hi, x) * z, x + bcast(t_lo, x) * z
    distance = make_distance(self.distance, self.c, extra.get("distance"), self.lpips_resize)
    dist = consistency_pair_distance(model_fn, params, extra["target"], x_hi, t_hi, x_lo, t_lo,
                                     d_keys, distance)
    return dist, {"t": t_hi, "distance": dist, "num_scales": big_n + 0.0 * t_hi}


METHODS = {"ct": CTObjective}
SETUP_FIELDS = {"ct": {"lpips_weights": ""}}
