"""ECT: Easy Consistency Tuning (Geng et al., "Consistency Models Made Easy", ICLR 2025).

Per example (Sec. 3, Alg. 1 of the paper; details of the authors' code noted):
  t ~ exp(N(p_mean, p_std^2)),  r = r(t, step) (ECT mapping, `schedules.ect_mapping`),
  z ~ N(0, I),  x_t = x + t z,  x_r = x + r z   (same z),
  Delta = f_theta(x_t, t) - stopgrad(f_theta(x_r, r)),  both passes with the SAME
          dropout keys (the teacher is the student itself, no EMA teacher; `matched_dropout`),
  target = x where r <= sigma_min (boundary condition f(x, eps) = x; r = 0 in the paper),
  loss = w(t, r) * (sqrt(||Delta||^2 + c^2) - c), the norm over the whole example.
Weighting: 'inv_dt' w = 1/(t - r) (CIFAR-10 setting, c = 0) or 'snr_plus'
w = (t^2 + sd^2)/(t sd)^2 = 1/t^2 + 1/sd^2 (ImageNet-64 setting, c = 0.06).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax import distances, schedules
from cmjax.objectives.common import ObjectiveBase, require, bcast, per_example_normal, split_keys

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ECTObjective(ObjectiveBase):
  """ECT loss with its hyperparameters (paper defaults for CIFAR-10 except stage_steps).

  Attributes:
    p_mean, p_std: lognormal t distribution (CIFAR-10: -1.1, 2.0).
    q: curriculum ratio; stage_steps: d, steps per stage; initial_exponent: a0 in
      decay = 1/q^(stage + a0) (1 as in the authors' code; 0 starts with a denoising stage).
    k, b: sigmoid adjustment n(t) = 1 + k sigmoid(-b t).
    c: pseudo-Huber constant (0 = plain L2 norm).
    weighting: 'inv_dt' or 'snr_plus'.
    sigma_data: sd, used by 'snr_plus'.
    sigma_min, sigma_max: t is clipped to [sigma_min, sigma_max], the domain of f.
    matched_dropout: True (the paper and the authors' code, which restore the RNG state before
      the teacher pass): the stop-gradient pass f(x_r, r) uses the student pass's dropout mask;
      False draws an independent mask (an ablation only).
  """
  p_mean: float = -1.1
  p_std: float = 2.0
  q: float = 2.0
  stage_steps: int = 25_000
  initial_exponent: int = 1
  k: float = 8.0
  b: float = 1.0
  c: float = 0.0
  weighting: str = "inv_dt"
  sigma_data: float = 0.5
  sigma_min: float = 0.002
  sigma_max: float = 80.0
  matched_dropout: bool = True

  def __post_init__(self):
    require(self.p_std > 0, f"p_std must be positive, got {self.p_std}")
    require(self.q > 1, f"q must be > 1, got {self.q}")
    require(self.stage_steps > 0, f"stage_steps must be positive, got {self.stage_steps}")
    require(self.initial_exponent >= 0, f"initial_exponent must be >= 0, got {self.initial_exponent}")
    require(self.c >= 0, f"c must be >= 0, got {self.c}")
    require(self.weighting in ("inv_dt", "snr_plus"),
            f"weighting {self.weighting!r} is unknown; known: 'inv_dt', 'snr_plus'")

  def decay(self, step: Array) -> Array:
    """1 / q^(stage + a0) at `step` (an optax schedule of the step)."""
    return schedules.ect_decay_schedule(self.q, self.stage_steps, self.initial_exponent)(step)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example ECT loss.

    Args:
      model_fn: f(params, x (B,H,W,C), t (B,), dropout_keys (B,) | None) -> (B,H,W,C).
      params: parameters of f (gradients flow into the student pass only).
      x: clean images (B, H, W, C).
      keys: (B,) per-example PRNG keys (see `train_step`): they fix t, z and the
        dropout mask of each example whatever the batch split.
      step: the optimiser step (scalar int), drives the curriculum.
      extra: unused (the teacher is the online network under stop-gradient).
    Returns:
      (loss (B,), metrics dict of (B,) arrays).
    """
    del extra
    t_keys, z_keys, drop_keys = split_keys(keys, 3)
    t = jax.vmap(lambda k: schedules.lognormal_noise_levels(k, (), self.p_mean, self.p_std))(t_keys)
    t = jnp.clip(t, self.sigma_min, self.sigma_max)
    r = schedules.ect_mapping(t, self.decay(step), self.k, self.b)
    z = per_example_normal(z_keys, x.shape[1:])
    bc = lambda v: bcast(v, x)
    x_t = x + bc(t) * z
    at_boundary = r <= self.sigma_min
    r_eval = jnp.maximum(r, self.sigma_min)   # f is defined for r >= sigma_min only
    x_r = x + bc(r_eval) * z

    f_t = model_fn(params, x_t, t, drop_keys)
    teacher_drop = drop_keys if self.matched_dropout else jax.vmap(
        lambda k: jax.random.fold_in(k, 1))(drop_keys)
    f_r = jax.lax.stop_gradient(model_fn(params, x_r, r_eval, teacher_drop))
    target = jnp.where(bc(at_boundary), x, f_r)

    dist = distances.pseudo_huber(f_t, target, self.c)
    if self.weighting == "inv_dt":
      w = 1.0 / (t - r)
    else:
      w = 1.0 / t**2 + 1.0 / self.sigma_data**2
    loss = w * dist
    metrics = {"t": t, "r": r, "distance": dist, "at_boundary": at_boundary.astype(jnp.float32)}
    return loss, metrics


METHODS = {"ect": ECTObjective}
