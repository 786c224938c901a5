"""Shortcut models (Frans, Hafner, Levine, Abbeel, "One Step Diffusion via Shortcut Models", ICLR
2025), following the authors' JAX code `targets_shortcut.py` (github.com/kvfrans/shortcut-models,
commit 601004348667094e1b71f30942199759412d4432) with time REVERSED to cmjax's flow convention.

Time. The paper runs t from 0 (noise) to 1 (data): x_t = (1 - t) x_0 + t x_1 with x_0 noise, its
velocity is x_1 - x_0 and a shortcut step is x_{t+d} = x_t + d s(x_t, t, d). Here (as in
`cmjax.families.mean_flow`) t = 1 is noise and t = 0 data: z_t = (1 - t) x + t e, so t = 1 - t_paper,
the velocity is e - x = -(x_1 - x_0), and a step of size d goes DOWN in t:

  z_{t-d} = z_t - d s(z_t, t, d),   s(z_t, t, d) = u(z_t, r = t - d, t)   (mean_flow's u),

i.e. s = -s_paper. The backbone sees c_noise = t and c_noise_2 = d = t - r (the continuous step
size; the authors embed the integer level log2(1/d), which carries the same information).

Per batch of B examples (a micro-batch or a device's shard, where the train step splits it), the
FIRST B // bootstrap_every get self-consistency targets (the paper's Sec. 3 shortcut loss, its 1/4
of the batch; the code's default bootstrap_every is 8), the rest flow-matching targets (its
d = 0 term). With M = denoise_timesteps (128) and L = log2 M levels:

  bootstrap  level k ~ U{0, ..., L - 1} per example, step 2h = 2^-k (2h in {1, 1/2, ..., 2/M}),
             t ~ U{2h, 4h, ..., 1} (the grid of 2h: j 2h, j = 1..2^k; the code's randint(0, 2^k)/2^k
             in paper time), e ~ N(0, I), z_t = (1 - t) x + t e,
               s_1 = s_tgt(z_t, t, h),  z' = clip(z_t - h s_1),  s_2 = s_tgt(z', t - h, h),
               target = clip((s_1 + s_2) / 2)          (stop-gradient),
             where the finest half step h = 1/M is QUERIED at d = 0 (the flow-matching level: the
             code queries level log2 M there, the level its flow part trains), while z' still
             moves by h = 1/M;
  flow       t ~ U{1/M, 2/M, ..., 1} (the code's discrete t), e ~ N(0, I), z_t as above,
               target = e - x at d = 0                 (s(z_t, t, 0) = v, the conditional velocity);
  loss       ||s_theta(z_t, t, d) - target||^2 / D per example (d = 2h or 0), one trained pass.

s_tgt is the EMA target network theta- (extra['target'], decay target_decay = the code's
target_update_rate 0.999) when bootstrap_ema (the code's default bootstrap_ema = 1), else the online
parameters under stop-gradient; it runs without dropout (the code's train=False). clip bounds z'
and the target to [-clip, clip] as the code does with 4 (clip = 0 turns it off).

Departures from the code, all for cmjax's per-example randomness (`cmjax.objectives.common`): each
bootstrap example draws its level from its own key (the code assigns levels by position, B / (8 L)
examples per level); every draw (level, t, e, dropout) comes from the example's key only (the code
shares one time key between the two parts); the (1 - 1e-5) factor of the code's path is dropped (as
in `cmjax.objectives.fm`). Classifier-free guidance of the bootstrap targets (bootstrap_cfg) is not
implemented.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp

from cmjax.families.mean_flow import MEAN_FLOW
from cmjax.objectives.common import (ObjectiveBase, bcast, per_example_dims, per_example_normal,
                                     require, split_keys)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ShortcutObjective(ObjectiveBase):
  """Shortcut-model loss (flow matching at d = 0 plus self-consistency on the dyadic grid).

  Attributes:
    denoise_timesteps: M, a power of two >= 2: the finest step 1/M; bootstrap steps 2h = 2^-k,
      k = 0..log2(M) - 1.
    bootstrap_every: the first B // bootstrap_every examples of a batch get bootstrap targets (4:
      the paper's 1/4; the authors' code defaults to 8).
    bootstrap_ema: targets from the EMA target network (extra['target']) rather than the online
      parameters (both under stop-gradient).
    target_decay: that network's EMA decay (the code's target_update_rate).
    clip: |z'| and |target| are clipped to clip (the code's 4); 0: no clipping.
    labels: the batch's (B,) classes of a class-conditional run, set by `condition_on_labels`
      (`uses_labels`): the bootstrap targets see the first B // bootstrap_every of them (a model_fn
      with the whole batch's labels bound could not evaluate that part alone).
  """
  denoise_timesteps: int = 128
  bootstrap_every: int = 4
  bootstrap_ema: bool = True
  target_decay: float = 0.999
  clip: float = 4.0
  labels: Optional[Array] = dataclasses.field(default=None, compare=False, repr=False)
  family = MEAN_FLOW
  uses_labels = True

  def __post_init__(self):
    m = self.denoise_timesteps
    require(isinstance(m, int) and m >= 2 and (m & (m - 1)) == 0,
            f"denoise_timesteps must be a power of two >= 2, got {m}")
    require(isinstance(self.bootstrap_every, int) and self.bootstrap_every >= 1,
            f"bootstrap_every must be an integer >= 1, got {self.bootstrap_every}")
    require(0.0 <= self.target_decay < 1.0, f"target_decay must be in [0, 1), got {self.target_decay}")
    require(self.clip >= 0.0, f"clip must be >= 0 (0: no clipping), got {self.clip}")

  @property
  def uses_target(self) -> bool:
    """An EMA target network is kept when the bootstrap targets come from it."""
    return bool(self.bootstrap_ema)

  @property
  def num_levels(self) -> int:
    """L = log2(M): the number of bootstrap step sizes."""
    return int(round(math.log2(self.denoise_timesteps)))

  def target_ema(self, step: Array) -> Array:
    """The constant decay of theta- (the code's EMA with target_update_rate)."""
    del step
    return jnp.asarray(self.target_decay, jnp.float32)

  def sample_bootstrap(self, level_keys: Array, t_keys: Array) -> tuple[Array, Array]:
    """(d (B,), t (B,)) of the bootstrap part: d = 2^-k with k ~ U{0..L-1}, t ~ U{d, 2d, ..., 1}."""
    k = jax.vmap(lambda key: jax.random.randint(key, (), 0, self.num_levels))(level_keys)
    sections = jnp.left_shift(1, k)                       # 2^k
    j = jax.vmap(lambda key, n: jax.random.randint(key, (), 1, n + 1))(t_keys, sections)
    d = 1.0 / sections.astype(jnp.float32)
    return d, j.astype(jnp.float32) * d

  def sample_flow_t(self, t_keys: Array) -> Array:
    """t (B,) of the flow part: U{1/M, 2/M, ..., 1}."""
    m = self.denoise_timesteps
    j = jax.vmap(lambda key: jax.random.randint(key, (), 1, m + 1))(t_keys)
    return j.astype(jnp.float32) / m

  def half_step_condition(self, h: Array) -> Array:
    """The d the target network is queried at for a half step h (B,): h, except 0 at h = 1/M."""
    return jnp.where(h * self.denoise_timesteps <= 1.0 + 1e-6, 0.0, h)

  def _clip(self, a: Array) -> Array:
    return jnp.clip(a, -self.clip, self.clip) if self.clip > 0 else a

  def bootstrap_target(self, model_fn, target_params, z: Array, t: Array, d: Array,
                       labels: Optional[Array] = None) -> Array:
    """(s(z, t, d/2) + s(z - d/2 s(z, t, d/2), t - d/2, d/2)) / 2 under stop-gradient (clipped): the
    paper's self-consistency s(x_t, t, 2d) = (s(x_t, t, d) + s(x'_{t+d}, t + d, d)) / 2 in cmjax time.
    model_fn(params, z (B, ...), t (B,), t2=r (B,), labels=) -> s; z (B, ...); t, d (B,);
    labels (B,) classes or None (unconditional)."""
    h = 0.5 * d
    dc = self.half_step_condition(h)
    kw = {} if labels is None else {"labels": labels}  # unconditional: model_fn as it is
    s1 = model_fn(target_params, z, t, t2=t - dc, **kw)
    z2 = self._clip(z - bcast(h, z) * s1)
    s2 = model_fn(target_params, z2, t - h, t2=t - h - dc, **kw)
    return jax.lax.stop_gradient(self._clip(0.5 * (s1 + s2)))

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example loss. model_fn(params, z (B, ...), t (B,), dropout_keys, t2=r (B,)) -> s;
    x: (B, ...) clean data; keys: (B,); extra['target'] (theta-) when bootstrap_ema.

    Returns (loss (B,), metrics of (B,): 't', 'd', 'mse', and 'loss_bootstrap' / 'loss_flow'
    scaled so that their batch means are the means over each part)."""
    del step
    b = x.shape[0]
    nb = b // self.bootstrap_every
    if nb < 1:
      raise ValueError(f"a batch of {b} examples has no bootstrap part (bootstrap_every "
                       f"{self.bootstrap_every}); use batches of >= {self.bootstrap_every}")
    if self.bootstrap_ema:
      if extra is None or extra.get("target") is None:
        raise ValueError("shortcut with bootstrap_ema needs extra['target'] (the EMA target network)")
      target_params = extra["target"]
    else:
      target_params = params
    level_keys, t_keys, e_keys, d_keys = split_keys(keys, 4)
    e = per_example_normal(e_keys, x.shape[1:])
    d_b, t_b = self.sample_bootstrap(level_keys[:nb], t_keys[:nb])
    t_f = self.sample_flow_t(t_keys[nb:])
    t = jnp.concatenate([t_b, t_f])
    d = jnp.concatenate([d_b, jnp.zeros_like(t_f)])
    z = bcast(1.0 - t, x) * x + bcast(t, x) * e
    y = self.labels
    target_b = self.bootstrap_target(model_fn, target_params, z[:nb], t_b, d_b,
                                     None if y is None else y[:nb])
    target = jnp.concatenate([target_b, (e - x)[nb:]])
    s = model_fn(params, z, t, d_keys, t2=t - d, **({} if y is None else {"labels": y}))
    mse = jnp.sum(jnp.square((s - target).reshape(b, -1)), axis=-1) / per_example_dims(x)
    is_b = (jnp.arange(b) < nb).astype(mse.dtype)
    return mse, {"t": t, "d": d, "mse": mse,
                 "loss_bootstrap": mse * is_b * (b / nb),
                 "loss_flow": mse * (1.0 - is_b) * (b / max(b - nb, 1))}


METHODS = {"shortcut": ShortcutObjective}
