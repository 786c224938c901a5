"""DDPM++ and NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs"), as
reimplemented by EDM (Karras et al. 2022, NVlabs/edm `training/networks.py`, class SongUNet).

These are the CIFAR-10 backbones of EDM and of the consistency-model papers that build on it
(CM, iCT, ECT, sCM). EDM's CIFAR-10 settings (`train.py --arch=ddpmpp|ncsnpp`, --dropout=0.13;
its default --augment=0.12 also sets augment_dim=9):

                     DDPM++ (VP)                  NCSN++ (VE)
  model_channels     128                          128
  channel_mult       (2, 2, 2)                    (2, 2, 2)
  num_blocks         4                            4
  attention at       16x16 (+ the lowest level's first decoder block)
  dropout            0.13                         0.13
  noise embedding    positional, 128 channels     Fourier (scale 16), 256 channels
  encoder / decoder  standard / standard          residual / standard
  resample_filter    [1, 1] (box)                 [1, 3, 3, 1] (FIR)

Parameters (32x32x3, unconditional, augment_dim=0): DDPM++ 55,732,739, NCSN++ 56,395,523,
exactly EDM's counts (augment_dim=9 adds 1,152 / 2,304; label_dim=10 adds 1,408 / 2,816).
Tests check tiny configurations against outputs of EDM's PyTorch code (tests/test_song_unet.py).

EDM's `--arch=ncsnpp` keeps the standard decoder (score_sde's CIFAR-10 NCSN++ has
progressive='none', progressive_input='residual'); decoder_type='skip' (score_sde's
'output_skip') is available as an option.

Like the other backbones the network only sees (c_in * x, c_noise) and knows nothing of
noise levels; the preconditioner (cmjax.parametrization) wraps it.

Mixed precision: with params and x cast to bfloat16 the network runs in bfloat16 (convolutions,
activations, output); the noise/label embedding MLP stays float32 as in EDM's fp16 mode,
GroupNorm statistics and the attention softmax are float32 (see song_layers).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.song_layers import (INIT_ZERO_GAIN, Conv2d, UNetBlock, downsample,
                                      fourier_embedding, group_norm, label_vectors,
                                      positional_embedding, upsample, xavier_uniform)
from cmjax.models.remat import remat_block

Array = jax.Array

EMBEDDING_TYPES = ("positional", "fourier")
ENCODER_TYPES = ("standard", "skip", "residual")
DECODER_TYPES = ("standard", "skip")


class SongUNet(nn.Module):
  """DDPM++ / NCSN++ U-Net: x (B, H, W, C) NHWC, c_noise (B,) -> (B, H, W, C_out).

  Called as `model.apply({'params': p}, x, c_noise, train=False, class_labels=None,
  augment_labels=None, rngs={'dropout': key})` (rngs only for train=True), the convention of
  `cmjax.parametrization.make_model_fn`. H = W, divisible by 2^(len(channel_mult) - 1).

  Mapping (EDM SongUNet.forward): emb = [sin, cos] noise embedding of c_noise * noise_scale
  (model_channels * channel_mult_noise wide) + map_label(onehot * sqrt(label_dim))
  + map_augment(augment_labels); then emb = silu(map_layer1(silu(map_layer0(emb)))),
  model_channels * channel_mult_emb wide. Encoder: a 3x3 conv, then per level a downsampling
  residual block (levels > 0) and num_blocks residual blocks (model_channels * mult channels),
  every output kept as a skip. Decoder: per level, from the lowest, two blocks (the first with
  attention; lowest level) or an upsampling block, then num_blocks + 1 blocks on
  concat(h, skip); GroupNorm-SiLU-3x3 conv (init gain 1e-5) to C_out.

  Attributes:
    out_channels: output channels; 0 = the input's channel count.
    label_dim: number of classes, 0 = unconditional. class_labels are (B,) ints or
      (B, label_dim) one-hot/float vectors; None counts as all-zero (EDM's unconditional input).
    augment_dim: size of EDM's augmentation-label vector (9 when EDM trains with --augment),
      0 = none. augment_labels (B, augment_dim); None counts as zeros (no augmentation).
    model_channels, channel_mult, channel_mult_emb, num_blocks, attn_resolutions: widths,
      levels and attention resolutions (the resolution is that of the input, H >> level).
    dropout: dropout rate in the residual blocks (train=True only; rng stream 'dropout').
    label_dropout: probability of zeroing an example's class label in training (for
      classifier-free guidance); drawn from the 'dropout' rng stream.
    embedding_type: 'positional' (DDPM++) or 'fourier' (NCSN++).
    channel_mult_noise: noise embedding width = model_channels * this (1 DDPM++, 2 NCSN++).
    encoder_type: 'standard' (DDPM++), 'skip' or 'residual' (NCSN++).
    decoder_type: 'standard' (DDPM++ and EDM's NCSN++) or 'skip'.
    resample_filter: up/downsampling filter taps, (1, 1) for DDPM++, (1, 3, 3, 1) for NCSN++.
    fourier_scale: std of the Fourier frequencies (EDM: 16).
    fourier_seed: seed of the fixed Fourier frequencies (numpy; not a trained parameter).
    fourier_freqs: the Fourier frequencies themselves (channels/2 floats), used instead of the
      seeded draw: EDM and score_sde store theirs as a buffer, and an imported NCSN++ needs them.
    noise_scale: c_noise is multiplied by this before the embedding (EDM: 1; EDM's VP
      preconditioner feeds 999 t instead of a scaled c_noise).
    remat: recompute each residual block's activations in the backward pass (`nn.remat`,
      jax.checkpoint) instead of storing them: less activation memory for about one more
      forward pass; parameter names, outputs and gradients are unchanged (tests/test_remat.py).
  """
  out_channels: int = 0
  label_dim: int = 0
  augment_dim: int = 0
  model_channels: int = 128
  channel_mult: Sequence[int] = (2, 2, 2)
  channel_mult_emb: int = 4
  num_blocks: int = 4
  attn_resolutions: Sequence[int] = (16,)
  dropout: float = 0.13
  label_dropout: float = 0.0
  embedding_type: str = "positional"
  channel_mult_noise: int = 1
  encoder_type: str = "standard"
  decoder_type: str = "standard"
  resample_filter: Sequence[int] = (1, 1)
  fourier_scale: float = 16.0
  fourier_seed: int = 0
  fourier_freqs: Optional[Sequence[float]] = None
  noise_scale: float = 1.0
  remat: bool = False

  def _check(self, x: Array) -> None:
    """One ValueError line per bad argument or input."""
    if self.embedding_type not in EMBEDDING_TYPES:
      raise ValueError(f"unknown embedding_type {self.embedding_type!r}; known: {EMBEDDING_TYPES}")
    if self.encoder_type not in ENCODER_TYPES:
      raise ValueError(f"unknown encoder_type {self.encoder_type!r}; known: {ENCODER_TYPES}")
    if self.decoder_type not in DECODER_TYPES:
      raise ValueError(f"unknown decoder_type {self.decoder_type!r}; known: {DECODER_TYPES}")
    if len(self.resample_filter) < 2 or len(self.resample_filter) % 2:
      raise ValueError(f"resample_filter must have an even number of taps, got "
                       f"{tuple(self.resample_filter)}")
    if not self.channel_mult or self.num_blocks < 1 or self.model_channels < 4:
      raise ValueError(f"need channel_mult non-empty, num_blocks >= 1, model_channels >= 4; got "
                       f"{tuple(self.channel_mult)}, {self.num_blocks}, {self.model_channels}")
    if not (0.0 <= self.dropout < 1.0 and 0.0 <= self.label_dropout <= 1.0):
      raise ValueError(f"dropout must be in [0, 1) and label_dropout in [0, 1], got "
                       f"{self.dropout}, {self.label_dropout}")
    if self.model_channels * self.channel_mult_noise < 4:
      raise ValueError(f"noise embedding width {self.model_channels * self.channel_mult_noise} < 4")
    levels = len(self.channel_mult)
    if x.ndim != 4 or x.shape[1] != x.shape[2] or x.shape[1] % 2 ** (levels - 1):
      raise ValueError(f"x must be (B, H, H, C) with H divisible by 2^{levels - 1}, got {x.shape}")

  def _labels(self, class_labels: Optional[Array], batch: int) -> Array:
    """(B,) ints or (B, label_dim) -> (B, label_dim) float32; None -> zeros."""
    return label_vectors(class_labels, batch, self.label_dim)

  def _time_embedding(self, c_noise: Array, batch: int) -> Array:
    """One conditioning time -> (B, model_channels * channel_mult_noise), EDM's [sin, cos] order."""
    noise_ch = self.model_channels * self.channel_mult_noise
    c = jnp.broadcast_to(jnp.asarray(c_noise, jnp.float32), (batch,)) * self.noise_scale
    if self.embedding_type == "positional":
      emb = positional_embedding(c, noise_ch, endpoint=True)
    else:
      emb = fourier_embedding(c, noise_ch, self.fourier_scale, self.fourier_seed, self.fourier_freqs)
    half = noise_ch // 2
    return jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)  # EDM swaps to [sin, cos]

  def _embedding(self, c_noise: Array, class_labels, augment_labels, batch: int,
                 train: bool, c_noise_2: Optional[Array] = None) -> Array:
    """Noise (+ second time, + label, + augmentation) embedding -> (B, model_channels *
    channel_mult_emb). A second time (MeanFlow's t - r) is embedded the same way and concatenated,
    as the MeanFlow authors' CIFAR-10 U-Net does, so the embedding is twice as wide before
    map_layer0 (map_label / map_augment widen with it)."""
    emb = self._time_embedding(c_noise, batch)
    if c_noise_2 is not None:
      emb = jnp.concatenate([emb, self._time_embedding(c_noise_2, batch)], axis=-1)
    noise_ch = emb.shape[-1]
    emb_ch = self.model_channels * self.channel_mult_emb
    if self.label_dim:
      labels = self._labels(class_labels, batch)
      if train and self.label_dropout:
        keep = jax.random.uniform(self.make_rng("dropout"), (batch, 1)) >= self.label_dropout
        labels = labels * keep.astype(labels.dtype)
      emb = emb + nn.Dense(noise_ch, kernel_init=xavier_uniform(), name="map_label")(
          labels * math.sqrt(self.label_dim))
    elif class_labels is not None:
      raise ValueError("class_labels given but label_dim=0 (an unconditional model)")
    if self.augment_dim:
      aug = (jnp.zeros((batch, self.augment_dim), jnp.float32) if augment_labels is None
             else jnp.asarray(augment_labels, jnp.float32))
      if aug.shape != (batch, self.augment_dim):
        raise ValueError(f"augment_labels must be ({batch}, {self.augment_dim}), got {aug.shape}")
      emb = emb + nn.Dense(noise_ch, use_bias=False, kernel_init=xavier_uniform(),
                           name="map_augment")(aug)
    elif augment_labels is not None:
      raise ValueError("augment_labels given but augment_dim=0")
    emb = nn.silu(nn.Dense(emb_ch, kernel_init=xavier_uniform(), name="map_layer0")(emb))
    return nn.silu(nn.Dense(emb_ch, kernel_init=xavier_uniform(), name="map_layer1")(emb))

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               class_labels: Optional[Array] = None,
               augment_labels: Optional[Array] = None,
               c_noise_2: Optional[Array] = None) -> Array:
    """x (B, H, H, C), c_noise (B,) or scalar -> (B, H, H, out_channels or C); c_noise_2: an
    optional second time (B,), embedded like c_noise (see `_embedding`)."""
    self._check(x)
    batch, size, c_img = x.shape[0], x.shape[1], x.shape[-1]
    c_out = self.out_channels or c_img
    mc, taps, last = self.model_channels, tuple(self.resample_filter), len(self.channel_mult) - 1
    emb = self._embedding(c_noise, class_labels, augment_labels, batch, train, c_noise_2)
    block = functools.partial(remat_block(UNetBlock, self.remat), dropout=self.dropout,
                              skip_scale=math.sqrt(0.5),
                              eps=1e-6, resample_filter=taps)
    run = lambda h, **kw: block(**kw)(h, emb, train)  # noqa: E731

    # Encoder.
    h, aux, skips = x, x, []
    for level, mult in enumerate(self.channel_mult):
      res = size >> level
      tag = f"enc_{res}x{res}"
      if level == 0:
        h = Conv2d(mc, 3, name=f"{tag}_conv")(h)
      else:
        h = run(h, out_channels=h.shape[-1], down=True, name=f"{tag}_down")
        if self.encoder_type == "skip":
          aux = downsample(aux, taps)
          h = h + Conv2d(h.shape[-1], 1, name=f"{tag}_aux_skip")(aux)
        elif self.encoder_type == "residual":
          r = Conv2d(h.shape[-1], 3, down=True, resample_filter=taps, fused_resample=True,
                     name=f"{tag}_aux_residual")(aux)
          h = aux = (h + r) / math.sqrt(2.0)
      skips.append(h)
      for idx in range(self.num_blocks):
        h = run(h, out_channels=mc * mult, attention=res in self.attn_resolutions,
                name=f"{tag}_block{idx}")
        skips.append(h)

    # Decoder.
    out = None
    for level in reversed(range(last + 1)):
      res = size >> level
      tag = f"dec_{res}x{res}"
      if level == last:
        h = run(h, out_channels=h.shape[-1], attention=True, name=f"{tag}_in0")
        h = run(h, out_channels=h.shape[-1], name=f"{tag}_in1")
      else:
        h = run(h, out_channels=h.shape[-1], up=True, name=f"{tag}_up")
      for idx in range(self.num_blocks + 1):
        h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = run(h, out_channels=mc * self.channel_mult[level],
                attention=idx == self.num_blocks and res in self.attn_resolutions,
                name=f"{tag}_block{idx}")
      if self.decoder_type == "skip" or level == 0:
        if out is not None:
          out = upsample(out, taps)
        t = nn.silu(group_norm(h.shape[-1], 1e-6, f"{tag}_aux_norm", h.dtype)(h))
        t = Conv2d(c_out, 3, init_gain=INIT_ZERO_GAIN, name=f"{tag}_aux_conv")(t)
        out = t if out is None else t + out
    return out


# EDM's CIFAR-10 presets (NVlabs/edm train.py --arch=ddpmpp / ncsnpp), used by the paper configs.
DDPMPP_CIFAR10 = dict(model_channels=128, channel_mult=(2, 2, 2), channel_mult_emb=4, num_blocks=4,
               attn_resolutions=(16,), dropout=0.13, embedding_type="positional",
               channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
               resample_filter=(1, 1))
NCSNPP_CIFAR10 = dict(DDPMPP_CIFAR10, embedding_type="fourier", channel_mult_noise=2, encoder_type="residual",
               resample_filter=(1, 3, 3, 1), fourier_scale=16.0)


def _preset(base: dict, overrides: dict) -> SongUNet:
  fields = {f.name for f in dataclasses.fields(SongUNet)} - {"parent", "name"}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise ValueError(f"unknown SongUNet arguments {unknown}; known: {sorted(fields)}")
  return SongUNet(**{**base, **overrides})


def ddpmpp_cifar10(**overrides) -> SongUNet:
  """EDM's `--arch=ddpmpp` CIFAR-10 network (55,732,739 parameters unconditional), overridable."""
  return _preset(DDPMPP_CIFAR10, overrides)


def ncsnpp_cifar10(**overrides) -> SongUNet:
  """EDM's `--arch=ncsnpp` CIFAR-10 network (56,395,523 parameters unconditional), overridable."""
  return _preset(NCSNPP_CIFAR10, overrides)


BACKBONES = {"song_unet": SongUNet}
