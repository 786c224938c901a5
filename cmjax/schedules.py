"""Noise-level distributions and training curricula, as pure functions of the step.

Every curriculum here is an `optax.Schedule` (a function `step -> value` built
from jnp ops), so it is jit-friendly, needs no state and is restored for free
from the step stored in a checkpoint.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def lognormal_noise_levels(key: Array, shape, p_mean: float, p_std: float) -> Array:
  """t = exp(p_mean + p_std * n), n ~ N(0, 1) (EDM Eq. for p_train; ECT Sec. 3).

  Returns float32 of `shape`.
  """
  return jnp.exp(p_mean + p_std * jax.random.normal(key, shape))


def ect_stage(step: Array, stage_steps: int) -> Array:
  """ECT stage index floor(step / d) (authors' code convention, see `ect_decay_schedule`)."""
  return jnp.asarray(step, jnp.int32) // stage_steps


def ect_decay_schedule(q: float, stage_steps: int, initial_exponent: int = 1) -> optax.Schedule:
  """The ECT curriculum as an optax schedule: step -> 1 / q^(floor(step / d) + a0).

  ECT (Geng et al. 2024, Sec. 3.2, "mapping function") writes the exponent as
  a = ceil(iters / d); the authors' code uses stage = floor(iters / d) and
  q^(stage + 1), i.e. a0 = 1. The two agree except exactly at multiples of d; the
  default follows the code, whose schedule produced the published numbers.
  a0 = 0 makes the first stage pure denoising (decay 1, so r = 0 for every t):
  the natural start when training from scratch instead of from a diffusion model.
  """
  q = float(q)

  def schedule(step):
    stage = ect_stage(step, stage_steps)
    return jnp.power(jnp.float32(q), -(stage + initial_exponent).astype(jnp.float32))

  return schedule


def ect_mapping(t: Array, decay: Array, k: float = 8.0, b: float = 1.0) -> Array:
  """ECT mapping r(t) = max(0, t (1 - n(t) / q^a)), n(t) = 1 + k sigmoid(-b t).

  ECT paper Eq. (mapping function p(r | t, iters)) with the sigmoid adjustment.

  Args:
    t: noise levels, any shape.
    decay: 1 / q^a from `ect_decay_schedule(q, d)(step)` (scalar).
    k, b: the sigmoid adjustment's gain and slope (paper: k = 8, b = 1).
  Returns:
    r, same shape as t, with 0 <= r < t.
  """
  n = 1.0 + k * jax.nn.sigmoid(-b * t)
  return jnp.maximum(t * (1.0 - decay * n), 0.0)


def ema_decay_schedule(rate: float, warmup: bool = False, halflife_images: float = 0.0,
                       batch_size: int = 1, rampup_ratio: float = 0.0) -> optax.Schedule:
  """EMA decay of the sampling parameters as a schedule of the (0-based) step.

  warmup=False: the constant `rate`. warmup=True: min(rate, (1 + step) / (10 + step)),
  the usual warm-up of an EMA that starts from random parameters (it would otherwise
  keep a weight rate^step on the initialisation: 0.37 after 1,000 steps at 0.999).
  halflife_images > 0 (EDM, Karras et al. 2022, training_loop.py): decay
  0.5^(batch_size / h) with the half-life h in images, h = min(halflife_images,
  rampup_ratio * step * batch_size) when rampup_ratio > 0 (then the EMA equals the
  parameters at step 0); this replaces `rate` and survives a change of batch size.
  """
  if halflife_images > 0:
    def decay(step):
      h = jnp.asarray(halflife_images, jnp.float32)
      if rampup_ratio > 0:
        h = jnp.minimum(h, rampup_ratio * step * batch_size)
      return 0.5 ** (batch_size / jnp.maximum(h, 1e-8))
    return decay
  if not warmup:
    return optax.constant_schedule(rate)
  return lambda step: jnp.minimum(rate, (1.0 + step) / (10.0 + step))


def warmup_constant_lr(lr: float, warmup_steps: float) -> optax.Schedule:
  """Linear warmup from 0 to `lr` over `warmup_steps` (may be fractional), then constant:
  lr min(step / warmup_steps, 1), EDM's lr_rampup."""
  if warmup_steps <= 0:
    return optax.constant_schedule(lr)
  return lambda step: lr * jnp.minimum(jnp.asarray(step, jnp.float32) / warmup_steps, 1.0)


def lr_schedule(lr: float, warmup_steps: float, decay: str = "constant",
                num_steps: int = 0, decay_steps: float = 0) -> optax.Schedule:
  """The learning rate at each step: linear warm-up (`warmup_constant_lr`), then
  'constant': lr;  'cosine': lr (1 + cos(pi min(1, (s - w) / (N - w)))) / 2, reaching 0 at
  s = N = num_steps (Loshchilov & Hutter 2017, without restarts);  'inv_sqrt':
  lr / sqrt(max(s / decay_steps, 1)) (EDM2 training_loop.learning_rate_schedule, ref_batches =
  decay_steps; its ramp-up is the warm-up's factor)."""
  base = warmup_constant_lr(lr, warmup_steps)
  if decay == "constant":
    return base
  if decay == "inv_sqrt":
    if decay_steps <= 0:
      raise ValueError(f"optim.lr_decay='inv_sqrt' needs optim.lr_decay_steps > 0, got {decay_steps}")
    return lambda step: base(step) * jax.lax.rsqrt(
        jnp.maximum(jnp.asarray(step, jnp.float32) / decay_steps, 1.0))
  if decay != "cosine":
    raise ValueError(f"unknown optim.lr_decay {decay!r}; known: 'constant', 'cosine', 'inv_sqrt'")
  span = max(float(num_steps) - max(warmup_steps, 0.0), 1.0)

  def schedule(step):
    frac = jnp.clip((jnp.asarray(step, jnp.float32) - max(warmup_steps, 0.0)) / span, 0.0, 1.0)
    return base(step) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
  return schedule


@dataclasses.dataclass(frozen=True)
class Durations:
  """A config's run length and schedules in steps (see `resolve_durations`)."""
  num_steps: int
  warmup_steps: float
  ema: optax.Schedule
  lr_schedule: optax.Schedule


def resolve_durations(config) -> Durations:
  """Steps from the kimg fields, for the configured global batch B (EDM counts in images):
  num_steps = ceil(1000 train.duration_kimg / B) if duration_kimg > 0 else train.num_steps;
  lr warm-up 1000 optim.warmup_kimg / B steps if warmup_kimg > 0 else optim.warmup_steps;
  EMA from train.ema_halflife_kimg (with ema_rampup_ratio) if > 0 else ema_rate/ema_warmup."""
  t, o = config.train, config.optim
  b = int(t.batch_size)
  steps = math.ceil(1000.0 * t.duration_kimg / b) if t.duration_kimg > 0 else int(t.num_steps)
  warmup = 1000.0 * o.warmup_kimg / b if o.warmup_kimg > 0 else float(o.warmup_steps)
  ema = ema_decay_schedule(t.ema_rate, t.ema_warmup, 1000.0 * t.ema_halflife_kimg, b,
                           t.ema_rampup_ratio)
  return Durations(steps, warmup, ema,
                   lr_schedule(o.lr, warmup, o.get("lr_decay", "constant"), steps,
                               o.get("lr_decay_steps", 0)))


# ---------------------------------------------------------------------------------------------
# Discretisations and the CT / iCT curricula.


def karras_sigmas(n: Array | int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                  rho: float = 7.0) -> Array:
  """The Karras et al. (2022, Eq. 5) grid in INCREASING order, as the CM paper indexes it.

  t_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho, i = 1..N, so t_1 = eps and
  t_N = T. Returns (N,) float32 (n must be a Python int here; see `karras_sigma_at` for a traced N).
  The EDM sampler's grid is this one reversed (then a final 0 appended).
  """
  return karras_sigma_at(jnp.arange(int(n)), n, sigma_min, sigma_max, rho)


def karras_sigma_at(index: Array, n: Array, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float = 7.0) -> Array:
  """t_{index+1} of the increasing N-point Karras grid (0-based `index`; N may be traced)."""
  lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
  frac = jnp.asarray(index, jnp.float32) / (jnp.asarray(n, jnp.float32) - 1.0)
  return (lo + frac * (hi - lo)) ** rho


def _step_function(values0: int, boundaries: list[int]) -> optax.Schedule:
  """step -> values0 + #{b in boundaries : step >= b} (an exact integer step function)."""
  table = jnp.asarray(boundaries, jnp.int32) if boundaries else None

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    if table is None:
      return jnp.full(step.shape, values0, jnp.int32)
    return values0 + jnp.sum(step[..., None] >= table, axis=-1, dtype=jnp.int32)

  return schedule


def ct_num_scales_schedule(s0: int, s1: int, total_steps: int) -> optax.Schedule:
  """CT discretisation curriculum (CM paper, Appendix C, Table 3):

    N(k) = ceil(sqrt(k/K ((s1 + 1)^2 - s0^2) + s0^2) - 1) + 1,

  N(0) = s0, N(K) = s1 + 1; held at N(K) after K steps. Computed with exact integer
  arithmetic: N(k) >= n  <=>  k ((s1+1)^2 - s0^2) > ((n-1)^2 - s0^2) K, so the step where N
  reaches n is found once in Python integers (the official code evaluates the formula in
  float32 and is off by one near some integer boundaries). Returns int32.
  """
  s0, s1, K = int(s0), int(s1), int(total_steps)
  span = (s1 + 1) ** 2 - s0 ** 2
  bounds = [(((n - 1) ** 2 - s0 ** 2) * K) // span + 1 for n in range(s0 + 1, s1 + 2)]
  return _step_function(s0, bounds)


def ct_target_ema_schedule(s0: int, s1: int, total_steps: int, mu0: float,
                           divisor: str = "official") -> optax.Schedule:
  """CT target-network EMA mu(k) = exp(s0 ln(mu0) / N(k)) (CM paper, Appendix C).

  divisor='paper': N(k) as printed (mu(0) = mu0 = 0.9 on CIFAR-10).
  divisor='official': N(k) - 1, as both official repositories compute it (mu(0) = mu0^2 =
  0.81). The published CT numbers were produced with it, hence the default.
  """
  if divisor not in ("paper", "official"):
    raise ValueError(f"unknown mu(k) divisor {divisor!r}; known: 'paper', 'official'")
  n_sched = ct_num_scales_schedule(s0, s1, total_steps)
  shift = 0.0 if divisor == "paper" else 1.0
  log_mu0 = math.log(mu0)

  def schedule(step):
    n = n_sched(step).astype(jnp.float32) - shift
    return jnp.exp(s0 * log_mu0 / n)

  return schedule


def ict_num_scales_schedule(s0: int, s1: int, total_steps: int) -> optax.Schedule:
  """iCT exponential curriculum (Song & Dhariwal 2023, Sec. 3.4):

    N(k) = min(s0 2^floor(k / K'), s1) + 1,  K' = floor(K / (log2 floor(s1 / s0) + 1)).

  CIFAR-10: s0 = 10, s1 = 1280, so N doubles from 11 to 1281 in 8 equal phases. Exact integers.
  """
  s0, s1, K = int(s0), int(s1), int(total_steps)
  k_prime = int(math.floor(K / (math.log2(s1 // s0) + 1)))
  bounds, values, p = [], [], 1
  while min(s0 * 2 ** p, s1) > min(s0 * 2 ** (p - 1), s1) and k_prime > 0:
    bounds.append(p * k_prime)
    values.append(min(s0 * 2 ** p, s1) + 1)
    p += 1
  table_v = jnp.asarray([min(s0, s1) + 1] + values, jnp.int32)
  table_b = jnp.asarray(bounds, jnp.int32)

  def schedule(step):
    step = jnp.asarray(step, jnp.int32)
    return table_v[jnp.sum(step[..., None] >= table_b, axis=-1)] if bounds else table_v[0] + 0 * step

  return schedule


def discrete_lognormal_logits(sigmas: Array, p_mean: float = -1.1, p_std: float = 2.0,
                              num_valid: Array | None = None) -> Array:
  """Log-probabilities of picking interval i = [sigma_i, sigma_{i+1}] (iCT Sec. 3.5):

    p(i) ∝ erf((ln sigma_{i+1} - Pm) / (sqrt(2) Ps)) - erf((ln sigma_i - Pm) / (sqrt(2) Ps)).

  Args:
    sigmas: (M,) increasing grid (M may exceed the live N; see num_valid).
    num_valid: N, the live number of grid points (traced ok); intervals i >= N - 1 get -inf.
  Returns:
    (M - 1,) unnormalised log-probabilities (use with `jax.random.categorical`).
  """
  cdf = jax.scipy.special.erf((jnp.log(sigmas) - p_mean) / (jnp.sqrt(2.0) * p_std))
  mass = cdf[1:] - cdf[:-1]
  logits = jnp.log(jnp.maximum(mass, 1e-30))
  if num_valid is not None:
    logits = jnp.where(jnp.arange(mass.shape[0]) < num_valid - 1, logits, -jnp.inf)
  return logits


# ---------------------------------------------------------------------------------------------
# TrigFlow (sCM, Lu & Song 2024).


def trigflow_time(tau: Array, sigma_data: float = 0.5) -> Array:
  """TrigFlow time of an EDM-style log noise level: t = arctan(exp(tau) / sd) (sCM Sec. 4.2).

  With tau = ln(sigma) this is t = arctan(sigma / sd), the TrigFlow time whose noise-to-signal
  ratio matches EDM noise level sigma. Same shape as tau, in (0, pi/2).
  """
  return jnp.arctan(jnp.exp(tau) / sigma_data)


def trigflow_time_samples(key: Array, shape, p_mean: float = -1.0, p_std: float = 1.4,
                          sigma_data: float = 0.5) -> Array:
  """t = arctan(exp(tau) / sd), tau ~ N(Pm, Ps^2) (sCM's proposal distribution; CIFAR-10 values)."""
  return trigflow_time(p_mean + p_std * jax.random.normal(key, shape), sigma_data)


def linear_warmup(warmup_steps: int) -> optax.Schedule:
  """r(k) = min(1, k / warmup_steps) (sCM's tangent warmup; 1 from the start if warmup_steps <= 0)."""
  if warmup_steps <= 0:
    return optax.constant_schedule(1.0)
  return lambda step: jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / warmup_steps)
