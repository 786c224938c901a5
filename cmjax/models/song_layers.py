"""Building blocks of the DDPM++ / NCSN++ network (`cmjax.models.song_unet.SongUNet`).

A linen port of the layers in EDM's `training/networks.py` (Karras et al. 2022,
github.com/NVlabs/edm): the convolution with optional FIR up/downsampling, the
unified residual block with optional self-attention, and the two noise embeddings.
All tensors are NHWC (EDM is NCHW); convolution kernels are (k, k, C_in, C_out).

Initialisation follows EDM's `weight_init`: 'xavier_uniform' weights,
U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) and fans counted with the
receptive field (k*k*C_in, k*k*C_out); biases 0; GroupNorm scale 1, bias 0.
"""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Gains EDM's SongUNet uses: init_zero = xavier_uniform * 1e-5 (output layers of the
# residual branches and of the network), init_attn = xavier_uniform * sqrt(0.2) (qkv).
INIT_ZERO_GAIN = 1e-5
INIT_ATTN_GAIN = math.sqrt(0.2)


def xavier_uniform(gain: float = 1.0) -> nn.initializers.Initializer:
  """EDM `weight_init(mode='xavier_uniform') * gain`, Dense (in, out) / Conv (k, k, in, out)."""
  return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def group_norm(channels: int, eps: float, name: str) -> nn.GroupNorm:
  """EDM GroupNorm: min(32, C // 4) groups (at least 4 channels per group)."""
  return nn.GroupNorm(num_groups=min(32, channels // 4), epsilon=eps, name=name)


def _filter_2d(taps: Sequence[float]) -> np.ndarray:
  """Separable resampling filter f f^T / (sum f)^2, (k, k); [1,1] = box, [1,3,3,1] = FIR."""
  f = np.asarray(taps, dtype=np.float32)
  return np.outer(f, f) / f.sum() ** 2


def _depthwise(x: Array, f: np.ndarray, stride: int, dilation: int, pad: int) -> Array:
  """Applies the (k, k) filter f to every channel of x (B, H, W, C) separately."""
  c = x.shape[-1]
  w = jnp.tile(jnp.asarray(f, x.dtype)[:, :, None, None], (1, 1, 1, c))
  return jax.lax.conv_general_dilated(
      x, w, window_strides=(stride, stride), padding=[(pad, pad), (pad, pad)],
      lhs_dilation=(dilation, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=c)


def downsample(x: Array, taps: Sequence[float]) -> Array:
  """(B, H, W, C) -> (B, H/2, W/2, C): filter with f f^T / (sum f)^2, stride 2 (EDM Conv2d down)."""
  f = _filter_2d(taps)
  return _depthwise(x, f, stride=2, dilation=1, pad=(len(taps) - 1) // 2)


def upsample(x: Array, taps: Sequence[float]) -> Array:
  """(B, H, W, C) -> (B, 2H, 2W, C): transposed conv with 4 f f^T / (sum f)^2, stride 2 (EDM up).

  conv_transpose(x, f, stride 2, padding p) = conv(x dilated by 2, flip(f), padding k-1-p);
  f is symmetric, so no flip is needed.
  """
  f = 4.0 * _filter_2d(taps)
  return _depthwise(x, f, stride=1, dilation=2, pad=len(taps) - 1 - (len(taps) - 1) // 2)


class Conv2d(nn.Module):
  """EDM Conv2d: optional up/downsampling by the resample filter, then a k x k convolution.

  (B, H, W, C_in) -> (B, H', W', out_channels), H' = 2H (up), H/2 (down) or H.
  kernel=0 means no weights (pure resampling; then out_channels must equal C_in).
  fused_resample (down only): convolve with padding k//2 + f_pad first, then filter with
  stride 2, as EDM does for NCSN++'s residual input branch.

  Attributes:
    out_channels: output channels.
    kernel: square kernel size, or 0 for none.
    up, down: 2x upsampling / downsampling with `resample_filter`.
    resample_filter: 1-D filter taps (even length).
    fused_resample: convolve before downsampling (see above).
    init_gain: gain of the xavier-uniform weight init (1, INIT_ZERO_GAIN or INIT_ATTN_GAIN).
  """
  out_channels: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_filter: Sequence[int] = (1, 1)
  fused_resample: bool = False
  init_gain: float = 1.0

  def _conv(self, x: Array, w: Array, pad: int) -> Array:
    return jax.lax.conv_general_dilated(x, w.astype(x.dtype), (1, 1), [(pad, pad), (pad, pad)],
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  @nn.compact
  def __call__(self, x: Array) -> Array:
    if self.up and self.down:
      raise ValueError("Conv2d: up and down cannot both be set")
    k, taps = self.kernel, tuple(self.resample_filter)
    if not k:
      return upsample(x, taps) if self.up else downsample(x, taps) if self.down else x
    w = self.param("kernel", xavier_uniform(self.init_gain), (k, k, x.shape[-1], self.out_channels))
    b = self.param("bias", nn.initializers.zeros, (self.out_channels,))
    if self.fused_resample and self.down:
      x = self._conv(x, w, k // 2 + (len(taps) - 1) // 2)
      x = _depthwise(x, _filter_2d(taps), stride=2, dilation=1, pad=0)
    elif self.fused_resample and self.up:
      raise ValueError("Conv2d: fused_resample with up=True is not supported")
    else:
      if self.up:
        x = upsample(x, taps)
      if self.down:
        x = downsample(x, taps)
      x = self._conv(x, w, k // 2)
    return x + b.astype(x.dtype)


class UNetBlock(nn.Module):
  """EDM UNetBlock as SongUNet configures it (adaptive_scale=False, resample_proj=True).

  (B, H, W, C_in), emb (B, E) -> (B, H', W', out_channels), H' = 2H (up), H/2 (down) or H:
    h = conv0(silu(norm0(x)))                   (3x3, resampled when up/down)
    h = silu(norm1(h + affine(emb)))            (embedding added per channel)
    h = conv1(dropout(h))                       (3x3, init gain 1e-5)
    x = skip_scale * (h + skip(x))              (skip: 1x1 conv, resampled, if shape changes)
  and with attention (single-head unless num_heads > 1, EDM's q.k / sqrt(C_head) in float32):
    x = skip_scale * (proj(softmax(q k^T / sqrt(C_head)) v) + x), qkv = 1x1 conv(norm2(x)).
  The qkv channels are laid out (head, channel, {q,k,v}) as in EDM's reshape.
  """
  out_channels: int
  up: bool = False
  down: bool = False
  attention: bool = False
  num_heads: int = 1
  dropout: float = 0.0
  skip_scale: float = 1.0
  eps: float = 1e-5
  resample_filter: Sequence[int] = (1, 1)

  @nn.compact
  def __call__(self, x: Array, emb: Array, train: bool) -> Array:
    cin, cout = x.shape[-1], self.out_channels
    taps = tuple(self.resample_filter)
    h = nn.silu(group_norm(cin, self.eps, "norm0")(x))
    h = Conv2d(cout, 3, up=self.up, down=self.down, resample_filter=taps, name="conv0")(h)
    h = h + nn.Dense(cout, kernel_init=xavier_uniform(), name="affine")(emb)[:, None, None, :]
    h = nn.silu(group_norm(cout, self.eps, "norm1")(h))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = Conv2d(cout, 3, init_gain=INIT_ZERO_GAIN, name="conv1")(h)
    if cout != cin or self.up or self.down:
      x = Conv2d(cout, 1, up=self.up, down=self.down, resample_filter=taps, name="skip")(x)
    x = (h + x) * self.skip_scale
    if not self.attention:
      return x
    b, hh, ww, _ = x.shape
    heads = self.num_heads
    qkv = group_norm(cout, self.eps, "norm2")(x)
    qkv = Conv2d(3 * cout, 1, init_gain=INIT_ATTN_GAIN, name="qkv")(qkv)
    qkv = qkv.reshape(b, hh * ww, heads, cout // heads, 3)
    q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
    logits = jnp.einsum("bqhc,bkhc->bhqk", q.astype(jnp.float32), k.astype(jnp.float32))
    w = jax.nn.softmax(logits / math.sqrt(cout // heads), axis=-1).astype(x.dtype)
    a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, hh, ww, cout)
    a = Conv2d(cout, 1, init_gain=INIT_ZERO_GAIN, name="proj")(a)
    return (a + x) * self.skip_scale


def positional_embedding(x: Array, channels: int, max_positions: float = 10000.0) -> Array:
  """DDPM++ embedding (EDM PositionalEmbedding, endpoint=True): x (B,) -> (B, channels).

  freqs_i = max_positions^(-i / (channels/2 - 1)), i = 0..channels/2-1; returns [cos, sin](x freqs).
  """
  half = channels // 2
  freqs = (1.0 / max_positions) ** (jnp.arange(half, dtype=jnp.float32) / (half - 1))
  args = x.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def fourier_embedding(x: Array, channels: int, scale: float, seed: int) -> Array:
  """NCSN++ random Fourier features (EDM FourierEmbedding): x (B,) -> (B, channels).

  freqs ~ N(0, scale^2), channels/2 of them, fixed (a buffer in EDM, not trained); here drawn
  from numpy's generator with `seed`, so they are a constant of the model, not a parameter.
  Returns [cos, sin](2 pi x freqs).
  """
  freqs = np.random.default_rng(seed).standard_normal(channels // 2).astype(np.float32) * scale
  args = x.astype(jnp.float32)[:, None] * jnp.asarray(2 * np.pi * freqs)[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
