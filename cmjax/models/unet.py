"""A small linen U-Net backbone (DDPM/EDM style) for low-resolution images.

The backbone only sees (c_in * x, c_noise): it knows nothing of noise levels;
the preconditioner (cmjax.parametrization) wraps it.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.embeddings import positional_embedding

Array = jax.Array


class ResBlock(nn.Module):
  """GroupNorm-SiLU-Conv twice, time embedding added in between, dropout before the 2nd conv."""
  out_channels: int
  dropout: float = 0.0
  groups: int = 8

  @nn.compact
  def __call__(self, x: Array, emb: Array, train: bool) -> Array:
    h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, x.shape[-1]))(x))
    h = nn.Conv(self.out_channels, (3, 3))(h)
    h = h + nn.Dense(self.out_channels)(emb)[:, None, None, :]
    h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, self.out_channels))(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros)(h)
    if x.shape[-1] != self.out_channels:
      x = nn.Conv(self.out_channels, (1, 1))(x)
    return (x + h) / math.sqrt(2.0)


class UNet(nn.Module):
  """U-Net: (B, H, W, C) images and (B,) c_noise -> (B, H, W, C).

  Attributes:
    channels: base width; level i has channels * channel_mult[i].
    channel_mult: one entry per resolution (2 entries = H and H/2).
    num_res_blocks: residual blocks per level on the way down (one more going up).
    dropout: dropout rate inside residual blocks (train=True only).
    time_scale: c_noise is multiplied by this before the positional embedding
      (c_noise = ln(t)/4 spans about [-1.6, 1.1], so ~1000 spreads it over the
      embedding's frequencies as DDPM timesteps would).
    groups: GroupNorm groups.
    label_dim: number of classes (0 = unconditional); a class-conditional model adds a
      learned embedding of the one-hot label to the time embedding (as EDM's map_label).
  Mixed precision: with bfloat16 parameters and input the whole network computes in bf16
  (GroupNorm statistics in float32, as flax computes them).
  """
  channels: int = 64
  channel_mult: Sequence[int] = (1, 2)
  num_res_blocks: int = 2
  dropout: float = 0.1
  time_scale: float = 1000.0
  groups: int = 8
  label_dim: int = 0

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               class_labels: Array | None = None, c_noise_2: Array | None = None) -> Array:
    """x (B, H, W, C), c_noise (B,), class_labels (B,) ints (label_dim > 0) -> (B, H, W, C).

    c_noise_2: an optional second conditioning time (B,) (MeanFlow's r, a shortcut model's step):
    when given, a learned projection of its embedding is added to the time embedding (the
    parameters exist when the model was initialised with it)."""
    if x.shape[1] % (2 ** (len(self.channel_mult) - 1)):
      raise ValueError(f"image size {x.shape[1]} is not divisible by 2^(levels-1) for "
                       f"channel_mult={tuple(self.channel_mult)}")
    emb_dim = 4 * self.channels
    emb = positional_embedding(c_noise * self.time_scale, self.channels).astype(x.dtype)
    if c_noise_2 is not None:
      emb2 = positional_embedding(c_noise_2 * self.time_scale, self.channels).astype(x.dtype)
      emb = emb + nn.Dense(self.channels, name="time2_embed")(emb2)
    if self.label_dim:
      if class_labels is None or class_labels.shape != x.shape[:1]:
        raise ValueError(f"a class-conditional UNet (label_dim={self.label_dim}) needs "
                         f"class_labels of shape {x.shape[:1]}, got "
                         f"{None if class_labels is None else class_labels.shape}")
      onehot = jax.nn.one_hot(class_labels, self.label_dim, dtype=x.dtype)
      emb = emb + nn.Dense(self.channels, name="label_embed")(onehot)
    elif class_labels is not None:
      raise ValueError("class_labels given to an unconditional UNet (label_dim=0)")
    emb = nn.silu(nn.Dense(emb_dim)(emb))
    emb = nn.silu(nn.Dense(emb_dim)(emb))
    block = lambda ch: ResBlock(ch, self.dropout, self.groups)

    h = nn.Conv(self.channels, (3, 3))(x)
    skips = [h]
    for level, mult in enumerate(self.channel_mult):
      for _ in range(self.num_res_blocks):
        h = block(self.channels * mult)(h, emb, train)
        skips.append(h)
      if level != len(self.channel_mult) - 1:
        h = nn.Conv(h.shape[-1], (3, 3), strides=(2, 2))(h)  # downsample
        skips.append(h)
    h = block(h.shape[-1])(h, emb, train)
    h = block(h.shape[-1])(h, emb, train)
    for level in reversed(range(len(self.channel_mult))):
      for _ in range(self.num_res_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = block(self.channels * self.channel_mult[level])(h, emb, train)
      if level != 0:
        b, hh, ww, c = h.shape
        h = jax.image.resize(h, (b, hh * 2, ww * 2, c), "nearest")  # upsample
        h = nn.Conv(c, (3, 3))(h)
    h = nn.silu(nn.GroupNorm(num_groups=min(self.groups, h.shape[-1]))(h))
    return nn.Conv(x.shape[-1], (3, 3), kernel_init=nn.initializers.zeros)(h)


BACKBONES = {"unet": UNet}
