"""ADM (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis"), as
reimplemented by EDM (Karras et al. 2022, NVlabs/edm `training/networks.py`, class DhariwalUNet).

The class-conditional ImageNet 64x64 backbone of EDM and of the consistency-model papers that
build on it (CM, iCT, ECT). EDM's settings (`train.py --arch=adm`, README ImageNet-64 command:
--cond=1 --dropout=0.10 --augment=0, hence augment_dim=0):

  model_channels 192, channel_mult (1, 2, 3, 4), num_blocks 3, attention at 32, 16 and 8
  (64 channels per head), channel_mult_emb 4, dropout 0.10, label_dim 1000.

Parameters (64x64x3, label_dim=1000, augment_dim=0): 295,899,267 (~296M), exactly EDM's count
(tests/test_adm_unet.py counts EDM's layers shape by shape). Tests check a tiny configuration
against outputs of EDM's PyTorch code.

Differences from SongUNet (cmjax.models.song_unet): kaiming-uniform init (weights and biases,
gain sqrt(1/3)) with exactly-zero output layers; positional embedding without endpoint and
without the sin/cos swap; the label embedding (bias-free, N(0, 1) init, unscaled one-hot) is
added after the second mapping layer; scale-shift conditioning (adaptive_scale; additive with
adaptive_scale=False); multi-head attention (out_channels // 64 heads, none below 64 channels)
in every encoder and decoder block at attn_resolutions; same-channel resampling skips without
weights; skip_scale 1, eps 1e-5; a single GroupNorm-SiLU-3x3 conv output layer.

Like the other backbones the network only sees (c_in * x, c_noise); the preconditioner
(cmjax.parametrization) wraps it. Mixed precision: with params and x cast to bfloat16 the
network runs in bfloat16 with float32 GroupNorm statistics, attention softmax and embedding MLP
(see cmjax.models.song_layers).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.song_layers import (INIT_ADM_GAIN, Conv2d, UNetBlock, dense, group_norm,
                                      label_vectors, positional_embedding)
from cmjax.models.remat import remat_block

Array = jax.Array

CHANNELS_PER_HEAD = 64  # EDM DhariwalUNet: num_heads = out_channels // 64


class ADMUNet(nn.Module):
  """ADM U-Net (EDM DhariwalUNet): x (B, H, W, C) NHWC, c_noise (B,) -> (B, H, W, C_out).

  Called as `model.apply({'params': p}, x, c_noise, train=False, class_labels=None,
  augment_labels=None, rngs={'dropout': key})` (rngs only for train=True), the convention of
  `cmjax.parametrization.make_model_fn`. H = W, divisible by 2^(len(channel_mult) - 1).

  Mapping (EDM DhariwalUNet.forward): e = [cos, sin] positional embedding of c_noise
  (model_channels wide, endpoint=False) + map_augment(augment_labels);
  emb = silu(map_layer1(silu(map_layer0(e))) + map_label(onehot)), model_channels *
  channel_mult_emb wide. Encoder: a 3x3 conv to model_channels * channel_mult[0], then per level
  a downsampling block (levels > 0) and num_blocks blocks, every output kept as a skip. Decoder:
  per level, from the lowest, two blocks (the first with attention; lowest level) or an
  upsampling block, then num_blocks + 1 blocks on concat(h, skip); GroupNorm-SiLU-3x3 conv
  (zero init) to C_out.

  Attributes:
    out_channels: output channels; 0 = the input's channel count.
    label_dim: number of classes, 0 = unconditional. class_labels are (B,) ints or
      (B, label_dim) one-hot/float vectors; None counts as all-zero (EDM's unconditional input).
    augment_dim: size of EDM's augmentation-label vector, 0 = none (EDM's ImageNet run: 0).
      augment_labels (B, augment_dim); None skips the term (as EDM).
    model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions: widths, levels
      and attention resolutions (the resolution of a level is H >> level). A block at an
      attention resolution gets out_channels // 64 heads, i.e. none below 64 channels (EDM).
    dropout: dropout rate in the residual blocks (train=True only; rng stream 'dropout').
    label_dropout: probability of zeroing an example's class label in training (for
      classifier-free guidance); drawn from the 'dropout' rng stream.
    dropout_max_res: 0 = dropout in every residual block (EDM / ADM); R > 0 = dropout only in
      blocks whose output resolution is <= R. A block's dropout acts on its output-resolution
      feature maps (between norm1 and conv1), so a downsampling block counts at the lower and
      an upsampling block at the higher resolution: the rule of ECT's `dropout_res` (locuslab/ect
      training/networks_edm2.py: a block of level resolution res gets dropout 0 if res > R).
      R = 16 is the iCT/ECT ImageNet-64 setting, "dropout only at 16x16 and below" (after
      Hoogeboom et al. 2023, "simple diffusion": no dropout on the highest-resolution feature
      maps). Attention has no dropout (as EDM). See `block_dropout`.
    norm_groups: GroupNorm groups (0: EDM's min(32, C // 4); 32: guided-diffusion's GroupNorm32,
      as OpenAI's consistency models use; equal for C >= 128).
    channels_per_head: attention heads = out_channels // channels_per_head (64 in EDM and in
      OpenAI's released models).
    adaptive_scale: True (EDM / ADM ImageNet-64): scale-shift conditioning, each block's affine
      maps emb (B, E) to [scale, shift] (B, 2 C) and h = silu(shift + norm1(h) * (scale + 1)).
      False: the embedding is added before the norm, affine (B, C) and h = silu(norm1(h +
      affine(emb))) (EDM's UNetBlock adaptive_scale=False; guided-diffusion's
      use_scale_shift_norm=False, the flags of OpenAI's released LSUN-256 consistency models).
    remat: recompute each residual block's activations in the backward pass (`nn.remat`,
      jax.checkpoint) instead of storing them: less activation memory for about one more
      forward pass; parameter names, outputs and gradients are unchanged (tests/test_remat.py).
  """
  out_channels: int = 0
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 192
  channel_mult: Sequence[int] = (1, 2, 3, 4)
  channel_mult_emb: int = 4
  num_blocks: int = 3
  attn_resolutions: Sequence[int] = (32, 16, 8)
  dropout: float = 0.10
  label_dropout: float = 0.0
  dropout_max_res: int = 0
  norm_groups: int = 0
  channels_per_head: int = CHANNELS_PER_HEAD
  adaptive_scale: bool = True
  remat: bool = False

  def block_dropout(self, res: int) -> float:
    """Dropout rate of a residual block whose output resolution is res x res."""
    return self.dropout if not self.dropout_max_res or res <= self.dropout_max_res else 0.0

  def _check(self, x: Array) -> None:
    """One ValueError line per bad argument or input."""
    if not self.channel_mult or self.num_blocks < 1 or self.model_channels < 2:
      raise ValueError(f"need channel_mult non-empty, num_blocks >= 1, model_channels >= 2; got "
                       f"{tuple(self.channel_mult)}, {self.num_blocks}, {self.model_channels}")
    if min(self.channel_mult) * self.model_channels < 4:
      raise ValueError(f"every level needs >= 4 channels (GroupNorm), got model_channels "
                       f"{self.model_channels} x channel_mult {tuple(self.channel_mult)}")
    if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.label_dropout <= 1.0):
      raise ValueError(f"dropout must be in [0, 1) and label_dropout in [0, 1], got "
                       f"{self.dropout}, {self.label_dropout}")
    if self.dropout_max_res < 0:
      raise ValueError(f"dropout_max_res must be >= 0 (0 = every block), got "
                       f"{self.dropout_max_res}")
    levels = len(self.channel_mult)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] % 2 ** (levels - 1):
      raise ValueError(f"x must be (B, H, H, C) with H divisible by 2^{levels - 1}, got {x.shape}")

  def _embedding(self, c_noise: Array, class_labels, augment_labels, batch: int,
                 train: bool) -> Array:
    """Noise (+ augmentation, + label) embedding -> (B, model_channels * channel_mult_emb),
    float32."""
    mc, emb_ch = self.model_channels, self.model_channels * self.channel_mult_emb
    c = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (batch,))
    emb = positional_embedding(c, mc, endpoint=False)
    if self.augment_dim:
      if augment_labels is not None:
        aug = jnp.asarray(augment_labels, jnp.float32)
        if aug.shape != (batch, self.augment_dim):
          raise ValueError(f"augment_labels must be ({batch}, {self.augment_dim}), got {aug.shape}")
      else:  # EDM skips the term; zeros give the same output and create the parameter
        aug = jnp.zeros((batch, self.augment_dim), jnp.float32)
      emb = emb + dense(mc, self.augment_dim, "kaiming_uniform", 0.0, "map_augment",
                        use_bias=False)(aug)
    elif augment_labels is not None:
      raise ValueError("augment_labels given but augment_dim=0")
    emb = nn.silu(dense(emb_ch, mc, "kaiming_uniform", INIT_ADM_GAIN, "map_layer0")(emb))
    emb = dense(emb_ch, emb_ch, "kaiming_uniform", INIT_ADM_GAIN, "map_layer1")(emb)
    if self.label_dim:
      labels = label_vectors(class_labels, batch, self.label_dim)
      if train and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (batch, 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      # EDM: kaiming_normal * sqrt(label_dim) = N(0, 1) weights, no bias, one-hot not rescaled.
      emb = emb + nn.Dense(emb_ch, use_bias=False, kernel_init=nn.initializers.normal(1.0),
                           name="map_label")(labels)
    elif class_labels is not None:
      raise ValueError("class_labels given but label_dim=0 (an unconditional model)")
    return nn.silu(emb)

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               class_labels: Optional[Array] = None,
               augment_labels: Optional[Array] = None,
               c_noise_2: Optional[Array] = None) -> Array:
    """x (B, H, H, C), c_noise (B,) or scalar -> (B, H, H, out_channels or C), x.dtype."""
    if c_noise_2 is not None:
      raise ValueError(f"{type(self).__name__} takes one conditioning time; c_noise_2 was given")
    self._check(x)
    batch, size, c_img = x.shape[0], x.shape[1], x.shape[-1]
    c_out = self.out_channels or c_img
    mc, last = self.model_channels, len(self.channel_mult) - 1
    emb = self._embedding(c_noise, class_labels, augment_labels, batch, train)
    block = functools.partial(remat_block(UNetBlock, self.remat),
                              adaptive_scale=self.adaptive_scale, resample_proj=False,
                              init_mode="kaiming_uniform", eps=1e-5, skip_scale=1.0,
                              norm_groups=self.norm_groups)

    def run(h, res, name, attention=False, **kw):
      cout = kw.pop("out_channels", h.shape[-1])
      heads = cout // self.channels_per_head if attention else 0
      return block(out_channels=cout, attention=heads > 0, num_heads=max(heads, 1),
                   dropout=self.block_dropout(res), name=name, **kw)(h, emb, train)

    # Encoder.
    h, skips = x, []
    for level, mult in enumerate(self.channel_mult):
      res = size >> level
      tag = f"enc_{res}x{res}"
      if level == 0:
        h = Conv2d(mc * mult, 3, init_gain=INIT_ADM_GAIN, init_mode="kaiming_uniform",
                   name=f"{tag}_conv")(h)
      else:
        h = run(h, res, f"{tag}_down", down=True)
      skips.append(h)
      for idx in range(self.num_blocks):
        h = run(h, res, f"{tag}_block{idx}", attention=res in self.attn_resolutions,
                out_channels=mc * mult)
        skips.append(h)

    # Decoder.
    for level in reversed(range(last + 1)):
      res = size >> level
      tag = f"dec_{res}x{res}"
      if level == last:
        h = run(h, res, f"{tag}_in0", attention=True)
        h = run(h, res, f"{tag}_in1")
      else:
        h = run(h, res, f"{tag}_up", up=True)
      for idx in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = run(h, res, f"{tag}_block{idx}", attention=res in self.attn_resolutions,
                out_channels=mc * self.channel_mult[level])
    h = nn.silu(group_norm(h.shape[-1], 1e-5, "out_norm", h.dtype, self.norm_groups)(h))
    return Conv2d(c_out, 3, init_gain=0.0, init_mode="kaiming_uniform", name="out_conv")(h)


# EDM's class-conditional ImageNet-64 preset (NVlabs/edm train.py --arch=adm).
ADM_IMAGENET64 = dict(model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4,
                       num_blocks=3, attn_resolutions=(32, 16, 8), dropout=0.10, augment_dim=0,
                       label_dim=1000)


def adm_imagenet64(**overrides) -> ADMUNet:
  """EDM's `--arch=adm` class-conditional ImageNet-64 network (295,899,267 parameters at
  64x64x3, label_dim=1000, augment_dim=0), overridable (e.g. label_dim=0, dropout_max_res=16)."""
  fields = {f.name for f in dataclasses.fields(ADMUNet)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown ADMUNet arguments {unknown}; known: {sorted(fields)}")
  return ADMUNet(**{**ADM_IMAGENET64, **overrides})


BACKBONES = {"adm": ADMUNet}
