"""Magnitude-preserving layers of EDM2's U-Net (Karras et al. 2024, "Analyzing and Improving the
Training Dynamics of Diffusion Models"), a linen port of NVlabs/edm2 `training/networks_edm2.py`
(commit 4bf8162): `normalize`, `resample`, `mp_silu`, `mp_sum`, `mp_cat`, `MPFourier`, `MPConv`
and the encoder/decoder `Block` (paper Fig. 21). Used by `cmjax.models.edm2_unet.EDM2UNet`.

Layout: tensors are NHWC (EDM2 is NCHW); MPConv kernels are (k, k, C_in, C_out) for convolutions
and (C_in, C_out) for fully-connected layers (EDM2: (C_out, C_in, k, k) / (C_out, C_in)).

Mixed precision: activations follow the image input's dtype (float32 or bfloat16). Every
normalisation (the weight normalisation of MPConv, the pixel norm, the q/k/v norm) is computed in
float32 and cast back; attention logits and softmax are float32; MPConv kernels are normalised in
float32 and then cast to the activation dtype (as EDM2's fp16 mode); the embedding path
(MPFourier, the embedding MPConvs) stays float32.
"""
from __future__ import annotations

import math
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cmjax.models.song_layers import box_downsample, box_upsample

Array = jax.Array

NORM_EPS = 1e-4  # EDM2 normalize(eps=1e-4)
SILU_SCALE = 0.596  # EDM2 mp_silu: silu(x) / 0.596 (Eq. 81)
FLAVORS = ("enc", "dec")
RESAMPLE_MODES = ("keep", "up", "down")


def normalize(x: Array, axis, eps: float = NORM_EPS) -> Array:
  """EDM2 `normalize`: x / (eps + ||x||_axis / sqrt(N)), N = number of elements reduced over, so
  the result has unit RMS along `axis` (the magnitude of Eq. 47/66). Computed in float32, returned
  in x.dtype. axis: int or tuple of ints."""
  axes = (axis,) if isinstance(axis, int) else tuple(axis)
  n = int(np.prod([x.shape[a] for a in axes]))
  xf = x.astype(jnp.float32)
  norm = jnp.sqrt(jnp.sum(jnp.square(xf), axis=axes, keepdims=True))
  return (xf / (eps + norm * math.sqrt(1.0 / n))).astype(x.dtype)


def normalize_weight(w: Array) -> Array:
  """Per-output-channel weight normalisation of an MPConv kernel (k, k, C_in, C_out) or
  (C_in, C_out): EDM2 normalize(w) over all axes but the output one (Eq. 66). Returns w.dtype."""
  return normalize(w, tuple(range(w.ndim - 1)))


def resample(x: Array, mode: str = "keep") -> Array:
  """EDM2 `resample` with its only used filter f = [1, 1]: 'down' = 2x2 average pooling (the
  depthwise stride-2 conv with f f^T / 4), 'up' = nearest-neighbour 2x upsampling (the transposed
  conv with 4 f f^T / 4), 'keep' = identity. x (B, H, W, C) -> (B, H', W', C)."""
  if mode == "keep":
    return x
  if mode == "down":
    if x.shape[1] % 2 or x.shape[2] % 2:
      raise ValueError(f"resample 'down' needs even H and W, got {x.shape}")
    return box_downsample(x)
  if mode == "up":
    return box_upsample(x)
  raise ValueError(f"unknown resample mode {mode!r}; known: {RESAMPLE_MODES}")


def mp_silu(x: Array) -> Array:
  """Magnitude-preserving SiLU, silu(x) / 0.596 (EDM2 Eq. 81)."""
  return (jax.nn.silu(x) / SILU_SCALE).astype(x.dtype)


def mp_sum(a: Array, b: Array, t: float = 0.5) -> Array:
  """Magnitude-preserving sum, lerp(a, b, t) / sqrt((1 - t)^2 + t^2) (EDM2 Eq. 88)."""
  return (a + t * (b - a)) / math.sqrt((1 - t) ** 2 + t**2)


def mp_cat(a: Array, b: Array, t: float = 0.5) -> Array:
  """Magnitude-preserving concatenation along the channel (last) axis (EDM2 Eq. 103):
  [w_a a, w_b b], w_a = C (1 - t) / sqrt(N_a), w_b = C t / sqrt(N_b),
  C = sqrt((N_a + N_b) / ((1 - t)^2 + t^2))."""
  na, nb = a.shape[-1], b.shape[-1]
  c = math.sqrt((na + nb) / ((1 - t) ** 2 + t**2))
  wa, wb = c / math.sqrt(na) * (1 - t), c / math.sqrt(nb) * t
  return jnp.concatenate([wa * a, (wb * b).astype(a.dtype)], axis=-1)


class MPFourier(nn.Module):
  """Magnitude-preserving Fourier features (EDM2 Eq. 75): c (B,) -> sqrt(2) cos(c f + p), (B, N),
  float32.

  f = 2 pi N(0, bandwidth^2) and p = 2 pi U(0, 1) are fixed random buffers in EDM2 (drawn once at
  construction). Here they are the 'freqs' and 'phases' entries of the 'params' collection, drawn
  from the init key, so that they are saved, restored and converted with the rest of the network
  (`edm2_params_from_torch` loads EDM2's buffers into them), but they are never trained: the
  forward pass applies stop_gradient, so their gradients are exactly zero, and cmjax's optimiser
  zeroes their updates when weight decay is on (`EDM2UNet.buffer_leaves`,
  `cmjax.models.buffer_mask`; in your own optax chain use `edm2_trainable_mask`).
  """
  num_channels: int
  bandwidth: float = 1.0

  @nn.compact
  def __call__(self, c: Array) -> Array:
    n, bw = self.num_channels, self.bandwidth
    freqs = self.param("freqs", lambda k: 2 * np.pi * bw * jax.random.normal(k, (n,), jnp.float32))
    phases = self.param("phases", lambda k: 2 * np.pi * jax.random.uniform(k, (n,), jnp.float32))
    freqs = jax.lax.stop_gradient(freqs.astype(jnp.float32))
    phases = jax.lax.stop_gradient(phases.astype(jnp.float32))
    y = jnp.asarray(c, jnp.float32)[:, None] * freqs[None, :] + phases[None, :]
    return jnp.cos(y) * math.sqrt(2.0)


class MPConv(nn.Module):
  """Magnitude-preserving convolution (kernel_size k > 0) or fully-connected layer (k = 0) with
  weight normalisation at every call (EDM2 Eq. 47 and 66):
    w_eff = normalize(w) * gain / sqrt(fan_in),  fan_in = k * k * C_in (or C_in),
  no bias, 'same' padding. x (B, H, W, C_in) or (B, C_in) -> (B, H, W, features) / (B, features).

  Param 'kernel': (k, k, C_in, features) or (C_in, features), N(0, 1) init (EDM2 randn). EDM2's
  training-time *forced* weight normalisation (w <- normalize(w) in place at each train-mode
  forward) is not part of this pure forward: apply `edm2_force_normalize` to the parameters in
  the train loop (see `cmjax.models.edm2_unet`).
  """
  features: int
  kernel_size: int = 0

  @nn.compact
  def __call__(self, x: Array, gain=1.0) -> Array:
    k, cin = self.kernel_size, x.shape[-1]
    shape = (cin, self.features) if k == 0 else (k, k, cin, self.features)
    w = self.param("kernel", nn.initializers.normal(1.0), shape, jnp.float32)
    w = normalize_weight(w.astype(jnp.float32))
    w = (w * (jnp.asarray(gain, jnp.float32) / math.sqrt(np.prod(shape[:-1])))).astype(x.dtype)
    if k == 0:
      return jnp.dot(x, w)
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Block(nn.Module):
  """EDM2 U-Net encoder/decoder block with optional self-attention (paper Fig. 21).

  x (B, H, W, C_in), emb (B, C_emb) float32 -> (B, H', W', out_channels), x.dtype:
    x = resample(x); enc: x = pixel_norm(conv_skip(x) if C_in != C_out else x)
    y = conv_res1(dropout(mp_silu(conv_res0(mp_silu(x)) * (emb_linear(emb, gain=emb_gain) + 1))))
    dec: x = conv_skip(x) if C_in != C_out;   x = mp_sum(x, y, res_balance)
    attention (heads = C_out // channels_per_head): q, k, v pixel-normalised per head,
      x = mp_sum(x, attn_proj(softmax(q k^T / sqrt(d)) v), attn_balance)
    x = clip(x, -clip_act, clip_act)  (clip_act 0: no clipping)
  Dropout (rate `dropout`, rng stream 'dropout') only when train=True.
  """
  out_channels: int
  flavor: str = "enc"
  resample_mode: str = "keep"
  attention: bool = False
  channels_per_head: int = 64
  dropout: float = 0.0
  res_balance: float = 0.3
  attn_balance: float = 0.3
  clip_act: float = 256.0

  @nn.compact
  def __call__(self, x: Array, emb: Array, train: bool = False) -> Array:
    if self.flavor not in FLAVORS:
      raise ValueError(f"unknown Block flavor {self.flavor!r}; known: {FLAVORS}")
    cout, cin = self.out_channels, x.shape[-1]
    x = resample(x, self.resample_mode)
    if self.flavor == "enc":
      if cin != cout:
        x = MPConv(cout, 1, name="conv_skip")(x)
      x = normalize(x, -1)  # pixel norm

    y = MPConv(cout, 3, name="conv_res0")(mp_silu(x))
    emb_gain = self.param("emb_gain", nn.initializers.zeros, (), jnp.float32)
    c = MPConv(cout, 0, name="emb_linear")(emb, gain=emb_gain) + 1.0
    y = mp_silu(y * c[:, None, None, :].astype(y.dtype))
    if train and self.dropout:
      y = nn.Dropout(self.dropout, deterministic=False)(y)
    y = MPConv(cout, 3, name="conv_res1")(y)

    if self.flavor == "dec" and cin != cout:
      x = MPConv(cout, 1, name="conv_skip")(x)
    x = mp_sum(x, y, self.res_balance)

    heads = cout // self.channels_per_head if self.attention else 0
    if heads:
      b, h, w, _ = x.shape
      d = cout // heads
      qkv = MPConv(3 * cout, 1, name="attn_qkv")(x)
      # EDM2 reshapes (B, 3C, H, W) to (B, heads, d, 3, HW): channel = head * 3d + 3 * i + {q,k,v}.
      qkv = normalize(qkv.reshape(b, h * w, heads, d, 3), 3)
      q, k, v = qkv[..., 0], qkv[..., 1], qkv[..., 2]
      logits = jnp.einsum("bqhc,bkhc->bhqk", q, k / math.sqrt(d),
                          preferred_element_type=jnp.float32)
      att = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
      y = jnp.einsum("bhqk,bkhc->bqhc", att, v).reshape(b, h, w, cout)
      y = MPConv(cout, 1, name="attn_proj")(y)
      x = mp_sum(x, y, self.attn_balance)

    if self.clip_act:
      x = jnp.clip(x, -self.clip_act, self.clip_act)
    return x

