"""Building blocks of the DDPM++ / NCSN++ network (`cmjax.models.song_unet.SongUNet`).

A linen port of the layers in EDM's `training/networks.py` (Karras et al. 2022,
github.com/NVlabs/edm): the convolution with optional FIR up/downsampling, the
unified residual block with optional self-attention, and the two noise embeddings.
All tensors are NHWC (EDM is NCHW); convolution kernels are (k, k, C_in, C_out).

Initialisation follows EDM's `weight_init`: SongUNet uses 'xavier_uniform' weights,
U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)) and fans counted with the
receptive field (k*k*C_in, k*k*C_out), biases 0; DhariwalUNet (`cmjax.models.adm_unet`) uses
'kaiming_uniform', b = gain * sqrt(3 / fan_in), for weights and biases alike (PyTorch's default
init at gain sqrt(1/3)), and exact zeros for the residual branches' output layers.
GroupNorm scale 1, bias 0.

Mixed precision: activations follow the dtype of the image input (the lead casts params and x to
bfloat16): convolutions cast their weights to x.dtype, GroupNorm normalises in float32 and
returns x.dtype, attention logits and softmax are float32. The noise/label embedding stays
float32, as in EDM's fp16 mode; each block casts its projection of it to x.dtype.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cmjax.models.embeddings import fourier_embedding, label_vectors, positional_embedding  # noqa: F401

Array = jax.Array

# Gains EDM's SongUNet uses: init_zero = xavier_uniform * 1e-5 (output layers of the
# residual branches and of the network), init_attn = xavier_uniform * sqrt(0.2) (qkv).
INIT_ZERO_GAIN = 1e-5
INIT_ATTN_GAIN = math.sqrt(0.2)
# DhariwalUNet: init = kaiming_uniform * sqrt(1/3) for weights and biases (U(+-1/sqrt(fan_in))).
INIT_ADM_GAIN = math.sqrt(1.0 / 3.0)
INIT_MODES = ("xavier_uniform", "kaiming_uniform")


def xavier_uniform(gain: float = 1.0) -> nn.initializers.Initializer:
  """EDM `weight_init(mode='xavier_uniform') * gain`, Dense (in, out) / Conv (k, k, in, out)."""
  return nn.initializers.variance_scaling(gain**2, "fan_avg", "uniform")


def uniform_init(bound: float) -> nn.initializers.Initializer:
  """U(-bound, bound) of any shape (EDM weight_init with the layer's own fans); 0 gives zeros."""
  def init(key, shape, dtype=jnp.float32):
    if not bound:
      return jnp.zeros(shape, dtype)
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def init_bound(mode: str, fan_in: int, fan_out: int) -> float:
  """EDM weight_init's U(-b, b) bound: xavier sqrt(6/(fan_in+fan_out)), kaiming sqrt(3/fan_in)."""
  if mode not in INIT_MODES:
    raise ValueError(f"unknown init mode {mode!r}; known: {INIT_MODES}")
  if mode == "xavier_uniform":
    return math.sqrt(6.0 / (fan_in + fan_out))
  return math.sqrt(3.0 / fan_in)


def dense(features: int, fan_in: int, mode: str, gain: float, name: str,
          use_bias: bool = True) -> nn.Dense:
  """EDM Linear (in -> features), weight and bias both gain * U(+-bound) as EDM initialises them
  for mode 'kaiming_uniform'; for 'xavier_uniform' the bias is 0 (SongUNet's init_bias=0)."""
  if mode == "xavier_uniform":
    return nn.Dense(features, use_bias=use_bias, kernel_init=xavier_uniform(gain), name=name)
  b = gain * init_bound(mode, fan_in, features)
  return nn.Dense(features, use_bias=use_bias, kernel_init=uniform_init(b),
                  bias_init=uniform_init(b), name=name)


def group_norm(channels: int, eps: float, name: str, dtype=None, groups: int = 0) -> nn.GroupNorm:
  """EDM GroupNorm: min(32, C // 4) groups (at least 4 channels per group), or `groups` when > 0
  (guided-diffusion's GroupNorm32 in OpenAI's consistency models).

  Statistics and normalisation in float32 (flax); the output has `dtype` (pass x.dtype so a
  bfloat16 input stays bfloat16 whatever the parameters' dtype), None = promoted.
  """
  return nn.GroupNorm(num_groups=groups or min(32, channels // 4), epsilon=eps, dtype=dtype,
                      name=name)


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


def box_downsample(x: Array) -> Array:
  """2x2 average pooling, (B, H, W, C) -> (B, H/2, W/2, C) (H, W even), averaged in float32:
  what the stride-2 depthwise conv with the box filter [1, 1] computes, without a convolution."""
  b, h, w, c = x.shape
  pooled = x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4), dtype=jnp.float32)
  return pooled.astype(x.dtype)


def box_upsample(x: Array) -> Array:
  """Nearest-neighbour 2x upsampling, (B, H, W, C) -> (B, 2H, 2W, C): exactly the transposed
  conv with 4 f f^T / 4 = ones for the box filter f = [1, 1] (every tap multiplies by 1)."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _is_box(taps: Sequence[float]) -> bool:
  return len(taps) == 2 and taps[0] == taps[1]


def downsample(x: Array, taps: Sequence[float]) -> Array:
  """(B, H, W, C) -> (B, H/2, W/2, C): filter with f f^T / (sum f)^2, stride 2 (EDM Conv2d down).

  The box filter [1, 1] (DDPM++, ADM) on even H, W is 2x2 average pooling (`box_downsample`):
  on XLA's CPU backend the grouped convolution cost ~6x the whole pooling (bench/profile_ops.py).
  """
  if _is_box(taps) and x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0:
    return box_downsample(x)
  f = _filter_2d(taps)
  return _depthwise(x, f, stride=2, dilation=1, pad=(len(taps) - 1) // 2)


def upsample(x: Array, taps: Sequence[float]) -> Array:
  """(B, H, W, C) -> (B, 2H, 2W, C): transposed conv with 4 f f^T / (sum f)^2, stride 2 (EDM up).

  conv_transpose(x, f, stride 2, padding p) = conv(x dilated by 2, flip(f), padding k-1-p);
  f is symmetric, so no flip is needed. The box filter [1, 1] is nearest-neighbour upsampling
  (`box_upsample`, bit-identical; the lhs-dilated grouped convolution was the most expensive
  operation of a small SongUNet's train step on XLA's CPU backend: bench/profile_ops.py).
  """
  if _is_box(taps):
    return box_upsample(x)
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
    init_gain: gain of the weight init (1, INIT_ZERO_GAIN or INIT_ATTN_GAIN for SongUNet's
      xavier-uniform; INIT_ADM_GAIN or 0 for DhariwalUNet's kaiming-uniform).
    init_mode: 'xavier_uniform' (bias 0) or 'kaiming_uniform' (bias U(+-init_gain * bound)).
  """
  out_channels: int
  kernel: int
  up: bool = False
  down: bool = False
  resample_filter: Sequence[int] = (1, 1)
  fused_resample: bool = False
  init_gain: float = 1.0
  init_mode: str = "xavier_uniform"

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
    shape = (k, k, x.shape[-1], self.out_channels)
    if self.init_mode == "xavier_uniform":
      w_init, b_init = xavier_uniform(self.init_gain), nn.initializers.zeros
    else:
      bound = self.init_gain * init_bound(self.init_mode, k * k * shape[2], k * k * shape[3])
      w_init = b_init = uniform_init(bound)
    w = self.param("kernel", w_init, shape)
    b = self.param("bias", b_init, (self.out_channels,))
    if self.fused_resample and self.down:
      x = self._conv(x, w, k // 2 + (len(taps) - 1) // 2)
      x = downsample(x, taps) if len(taps) == 2 else _depthwise(x, _filter_2d(taps), stride=2,
                                                                 dilation=1, pad=0)
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
  """EDM UNetBlock, the residual block of SongUNet (DDPM++/NCSN++) and DhariwalUNet (ADM).

  (B, H, W, C_in), emb (B, E) -> (B, H', W', out_channels), H' = 2H (up), H/2 (down) or H:
    h = conv0(silu(norm0(x)))                   (3x3, resampled when up/down)
    h = silu(norm1(h + affine(emb)))            (adaptive_scale=False: SongUNet)
    h = silu(shift + norm1(h) * (scale + 1))    (adaptive_scale=True: ADM; [scale, shift] = affine)
    h = conv1(dropout(h))                       (3x3, init 1e-5 xavier / exact zeros)
    x = skip_scale * (h + skip(x))              (skip if shape changes: 1x1 conv, resampled; with
                                                 resample_proj=False and C_in == C_out a plain
                                                 resampling without weights, as ADM)
  and with attention (num_heads heads; EDM's q.k / sqrt(C_head) softmax in float32):
    x = skip_scale * (proj(softmax(q k^T / sqrt(C_head)) v) + x), qkv = 1x1 conv(norm2(x)).
  The qkv channels are laid out (head, channel, {q,k,v}) as in EDM's reshape.

  Attributes:
    out_channels, up, down, attention, num_heads, dropout, skip_scale, eps, resample_filter:
      as EDM's UNetBlock (num_heads given explicitly; ADM passes out_channels // 64).
    adaptive_scale: ADM's scale-shift conditioning (affine outputs 2 * out_channels).
    resample_proj: 1x1 projection on a resampling skip even when channels match (SongUNet).
    norm_groups: GroupNorm groups (0: EDM's min(32, C // 4)).
    init_mode: 'xavier_uniform' (SongUNet: init xavier, init_zero 1e-5 xavier, init_attn
      sqrt(0.2) xavier, biases 0) or 'kaiming_uniform' (DhariwalUNet: init kaiming * sqrt(1/3)
      for weights and biases, init_zero exact zeros, init_attn = init).
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
  adaptive_scale: bool = False
  resample_proj: bool = True
  init_mode: str = "xavier_uniform"
  norm_groups: int = 0

  @nn.compact
  def __call__(self, x: Array, emb: Array, train: bool) -> Array:
    cin, cout, dt = x.shape[-1], self.out_channels, x.dtype
    taps = tuple(self.resample_filter)
    adm = self.init_mode == "kaiming_uniform"
    g_init, g_zero = (INIT_ADM_GAIN, 0.0) if adm else (1.0, INIT_ZERO_GAIN)
    g_attn = INIT_ADM_GAIN if adm else INIT_ATTN_GAIN
    conv = functools.partial(Conv2d, resample_filter=taps, init_mode=self.init_mode)
    h = nn.silu(group_norm(cin, self.eps, "norm0", dt, self.norm_groups)(x))
    h = conv(cout, 3, up=self.up, down=self.down, init_gain=g_init, name="conv0")(h)
    width = cout * (2 if self.adaptive_scale else 1)
    params = dense(width, emb.shape[-1], self.init_mode, g_init, "affine")(emb)
    params = params[:, None, None, :].astype(dt)  # the float32 embedding's projection, in x.dtype
    if self.adaptive_scale:
      scale, shift = params[..., :cout], params[..., cout:]
      h = nn.silu(shift + group_norm(cout, self.eps, "norm1", dt, self.norm_groups)(h) * (scale + 1))
    else:
      h = nn.silu(group_norm(cout, self.eps, "norm1", dt, self.norm_groups)(h + params))
    h = nn.Dropout(self.dropout, deterministic=not train)(h)
    h = conv(cout, 3, init_gain=g_zero, name="conv1")(h)
    if cout != cin or self.up or self.down:
      kernel = 1 if self.resample_proj or cout != cin else 0
      x = conv(cout, kernel, up=self.up, down=self.down, init_gain=g_init, name="skip")(x)
    x = (h + x) * self.skip_scale
    if not self.attention:
      return x
    b, hh, ww, _ = x.shape
    heads = self.num_heads
    if heads < 1 or cout % heads:
      raise ValueError(f"UNetBlock: num_heads={heads} must divide out_channels={cout}")
    qkv = group_norm(cout, self.eps, "norm2", dt, self.norm_groups)(x)
    qkv = conv(3 * cout, 1, init_gain=g_attn, name="qkv")(qkv)
    qkv = qkv.reshape(b, hh * ww, heads, cout // heads, 3)
    q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k, preferred_element_type=jnp.float32)
    w = jax.nn.softmax(logits.astype(jnp.float32) / math.sqrt(cout // heads), axis=-1).astype(dt)
    a = jnp.einsum("bhqk,bkhc->bqhc", w, v).reshape(b, hh, ww, cout)
    a = conv(cout, 1, init_gain=g_zero, name="proj")(a)
    return (a + x) * self.skip_scale
