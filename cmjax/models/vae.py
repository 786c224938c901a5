"""The Stable Diffusion VAE (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent
Diffusion Models", the KL-regularised f8c4 autoencoder) in linen, following diffusers'
`AutoencoderKL` (diffusers 0.42.1: models/autoencoders/autoencoder_kl.py and vae.py, with
unets/unet_2d_blocks.py DownEncoderBlock2D / UpDecoderBlock2D / UNetMidBlock2D, resnet.py
ResnetBlock2D, downsampling.py / upsampling.py and attention_processor.py Attention).

Latent-space generators at ImageNet 256 (DiT, MeanFlow, shortcut models) work on the latents of
`stabilityai/sd-vae-ft-ema` / `sd-vae-ft-mse`: a 256x256x3 image in [-1, 1] maps to 32x32x4
latents, multiplied by `scaling_factor` 0.18215 so they have roughly unit variance. The SD config
is `sd_vae()`: block_out_channels (128, 256, 512, 512), layers_per_block 2, latent_channels 4,
norm_num_groups 32: 83,653,863 parameters, as diffusers' AutoencoderKL with that config.

Architecture (all NHWC; diffusers is NCHW):
  Encoder: conv_in 3x3 -> per level i a DownEncoderBlock (layers_per_block ResnetBlocks to
    block_out_channels[i], then, except at the last level, a downsampling 3x3 conv applied after
    zero padding (0, 1) at the bottom/right, stride 2, no other padding) -> mid block (ResnetBlock,
    single-head self-attention, ResnetBlock) -> GroupNorm, SiLU, conv_out 3x3 to
    2 * latent_channels (double_z: mean and log-variance) -> quant_conv 1x1.
  Decoder: post_quant_conv 1x1 -> conv_in 3x3 to block_out_channels[-1] -> mid block -> per level,
    widest first, an UpDecoderBlock (layers_per_block + 1 ResnetBlocks, then, except at the last,
    nearest-neighbour 2x upsampling and a 3x3 conv) -> GroupNorm, SiLU, conv_out 3x3.
  ResnetBlock: h = conv2(silu(norm2(conv1(silu(norm1(x)))))); out = shortcut(x) + h, the shortcut a
    1x1 conv when the channel count changes (no time embedding, no dropout in the VAE).
  Attention: h = GroupNorm(x); q, k, v = Dense(h); out = x + Dense(softmax(q k^T / sqrt(C)) v),
    one head of width C over the H*W positions.
  Every GroupNorm has eps 1e-6 and norm_num_groups groups.

Parameter names mirror diffusers' state dict ("encoder.down_blocks.0.resnets.1.conv1.weight" is
params['encoder']['down_blocks_0']['resnets_1']['conv1']['kernel']); the converter is
`cmjax.weights.vae_diffusers`. Conv kernels are (k, k, C_in, C_out), Dense kernels (C_in, C_out).

Precision: computation in `dtype` (float32 by default; bfloat16 optional as in the other
networks), parameters stored float32; GroupNorm statistics and the attention softmax are always
float32, and the posterior's mean / log-variance are returned in float32.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

GROUP_NORM_EPS = 1e-6  # diffusers' Encoder / Decoder / UNetMidBlock2D resnet_eps
SD_SCALING_FACTOR = 0.18215  # diffusers AutoencoderKL default, the SD 1.x / sd-vae-ft-* value
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0  # DiagonalGaussianDistribution's clamp


class VAEInputError(ValueError):
  """An input of the wrong shape / a missing key for the VAE; one-line message."""


def _group_norm(groups: int, dtype, name: str) -> nn.GroupNorm:
  """GroupNorm(groups, eps 1e-6): statistics in float32 (two-pass variance), output in `dtype`."""
  return nn.GroupNorm(num_groups=groups, epsilon=GROUP_NORM_EPS, use_fast_variance=False,
                      dtype=dtype, name=name)


def _conv(features: int, kernel: int, dtype, name: str, stride: int = 1,
          padding="SAME") -> nn.Conv:
  """A k x k convolution with bias, weights (k, k, C_in, C_out), computed in `dtype`."""
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                 dtype=dtype, name=name)


class ResnetBlock(nn.Module):
  """diffusers ResnetBlock2D with temb=None: (B, H, W, C_in) -> (B, H, W, out_channels).

  h = conv2(silu(norm2(conv1(silu(norm1(x)))))), 3x3 convs; returns shortcut(x) + h, where the
  shortcut is a 1x1 conv (`conv_shortcut`) iff C_in != out_channels (output_scale_factor 1).
  """
  out_channels: int
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    h = nn.silu(_group_norm(self.groups, self.dtype, "norm1")(x))
    h = _conv(self.out_channels, 3, self.dtype, "conv1")(h)
    h = nn.silu(_group_norm(self.groups, self.dtype, "norm2")(h))
    h = _conv(self.out_channels, 3, self.dtype, "conv2")(h)
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 1, self.dtype, "conv_shortcut")(x)
    return x + h


class AttentionBlock(nn.Module):
  """diffusers Attention as the VAE mid block uses it (one head, residual): (B, H, W, C) -> same.

  h = GroupNorm(x) flattened to (B, HW, C); q, k, v = h W_q + b_q, ...;
  out = x + (softmax(q k^T / sqrt(C)) v) W_out + b_out, logits and softmax in float32.
  """
  groups: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    b, hgt, wid, c = x.shape
    h = _group_norm(self.groups, self.dtype, "group_norm")(x).reshape(b, hgt * wid, c)
    q, k, v = (nn.Dense(c, dtype=self.dtype, name=n)(h) for n in ("to_q", "to_k", "to_v"))
    logits = jnp.einsum("bqc,bkc->bqk", q.astype(jnp.float32), k.astype(jnp.float32))
    w = jax.nn.softmax(logits / jnp.sqrt(jnp.float32(c)), axis=-1)
    h = jnp.einsum("bqk,bkc->bqc", w.astype(v.dtype), v)
    h = nn.Dense(c, dtype=self.dtype, name="to_out_0")(h)
    return x + h.reshape(b, hgt, wid, c)


class MidBlock(nn.Module):
  """diffusers UNetMidBlock2D (temb None): resnets_0, attentions_0 (if add_attention), resnets_1.
  (B, H, W, C) -> (B, H, W, C)."""
  groups: int
  add_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    x = ResnetBlock(c, self.groups, self.dtype, name="resnets_0")(x)
    if self.add_attention:
      x = AttentionBlock(self.groups, self.dtype, name="attentions_0")(x)
    return ResnetBlock(c, self.groups, self.dtype, name="resnets_1")(x)


class Downsample(nn.Module):
  """diffusers Downsample2D(use_conv=True, padding=0): (B, H, W, C) -> (B, H/2, W/2, C).

  Pads one zero row / column at the bottom / right only (F.pad (0, 1, 0, 1)), then a 3x3 conv
  with stride 2 and no padding (the asymmetric padding of the SD encoder)."""
  channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return _conv(self.channels, 3, self.dtype, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
  """diffusers Upsample2D(use_conv=True): nearest 2x, then a 3x3 conv (padding 1).
  (B, H, W, C) -> (B, 2H, 2W, C)."""
  channels: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(self.channels, 3, self.dtype, "conv")(x)


class Encoder(nn.Module):
  """diffusers `Encoder` with DownEncoderBlock2D blocks: (B, H, W, C_in) ->
  (B, H / 2^(L-1), W / 2^(L-1), 2 * out_channels if double_z else out_channels), L =
  len(block_out_channels). Submodules conv_in, down_blocks_{i}/{resnets_{j}, downsamplers_0},
  mid_block, conv_norm_out, conv_out (names as diffusers')."""
  out_channels: int = 4
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  double_z: bool = True
  mid_block_add_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    chans, g, dt = tuple(self.block_out_channels), self.norm_num_groups, self.dtype
    x = _conv(chans[0], 3, dt, "conv_in")(x)
    for i, c in enumerate(chans):
      block = _Level(c, g, self.layers_per_block, "down" if i < len(chans) - 1 else None, dt,
                     name=f"down_blocks_{i}")
      x = block(x)
    x = MidBlock(g, self.mid_block_add_attention, dt, name="mid_block")(x)
    x = nn.silu(_group_norm(g, dt, "conv_norm_out")(x))
    return _conv(2 * self.out_channels if self.double_z else self.out_channels, 3, dt, "conv_out")(x)


class Decoder(nn.Module):
  """diffusers `Decoder` with UpDecoderBlock2D blocks (norm_type 'group'): (B, h, w, C_latent) ->
  (B, h * 2^(L-1), w * 2^(L-1), out_channels). Submodules conv_in, mid_block,
  up_blocks_{i}/{resnets_{j}, upsamplers_0} (i = 0 the widest, lowest resolution),
  conv_norm_out, conv_out."""
  out_channels: int = 3
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32
  mid_block_add_attention: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, z: Array) -> Array:
    chans, g, dt = tuple(reversed(self.block_out_channels)), self.norm_num_groups, self.dtype
    x = _conv(chans[0], 3, dt, "conv_in")(z)
    x = MidBlock(g, self.mid_block_add_attention, dt, name="mid_block")(x)
    for i, c in enumerate(chans):
      block = _Level(c, g, self.layers_per_block + 1, "up" if i < len(chans) - 1 else None, dt,
                     name=f"up_blocks_{i}")
      x = block(x)
    x = nn.silu(_group_norm(g, dt, "conv_norm_out")(x))
    return _conv(self.out_channels, 3, dt, "conv_out")(x)


class _Level(nn.Module):
  """DownEncoderBlock2D / UpDecoderBlock2D: num_layers ResnetBlocks to `channels`, then an optional
  resampler (`downsamplers_0` / `upsamplers_0`)."""
  channels: int
  groups: int
  num_layers: int
  resample: Optional[str]
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    for j in range(self.num_layers):
      x = ResnetBlock(self.channels, self.groups, self.dtype, name=f"resnets_{j}")(x)
    if self.resample == "down":
      x = Downsample(self.channels, self.dtype, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample(self.channels, self.dtype, name="upsamplers_0")(x)
    return x


@flax.struct.dataclass
class DiagonalGaussian:
  """The VAE posterior N(mean, exp(logvar)) per latent element (diffusers
  DiagonalGaussianDistribution): mean, logvar (B, h, w, C_latent) float32, logvar clipped to
  [-30, 20]."""
  mean: Array
  logvar: Array

  @classmethod
  def from_moments(cls, moments: Array) -> "DiagonalGaussian":
    """(B, h, w, 2C) encoder output -> posterior: mean = first C channels, logvar = last C,
    clipped to [-30, 20] (torch.chunk(..., 2, dim=1) + clamp in diffusers)."""
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return cls(mean, jnp.clip(logvar, LOGVAR_MIN, LOGVAR_MAX))

  @property
  def std(self) -> Array:
    """exp(logvar / 2), (B, h, w, C)."""
    return jnp.exp(0.5 * self.logvar)

  @property
  def var(self) -> Array:
    """exp(logvar), (B, h, w, C)."""
    return jnp.exp(self.logvar)

  def mode(self) -> Array:
    """The posterior mean (its mode), (B, h, w, C)."""
    return self.mean

  def sample(self, key: Array) -> Array:
    """mean + std * eps, eps ~ N(0, I) drawn from `key` (reparameterised sample), (B, h, w, C)."""
    return self.mean + self.std * jax.random.normal(key, self.mean.shape, jnp.float32)

  def kl(self) -> Array:
    """KL(q || N(0, I)) summed over (h, w, C): 0.5 * sum(mean^2 + var - 1 - logvar), (B,)."""
    return 0.5 * jnp.sum(self.mean ** 2 + self.var - 1.0 - self.logvar, axis=(1, 2, 3))


class AutoencoderKL(nn.Module):
  """diffusers `AutoencoderKL` (DownEncoderBlock2D / UpDecoderBlock2D blocks) in linen, NHWC.

  Methods (use with `model.apply({'params': p}, ..., method=...)`):
    encode(x (B, H, W, in_channels)) -> DiagonalGaussian over (B, H/f, W/f, latent_channels),
      f = 2^(len(block_out_channels) - 1) (8 for SD); the latents are NOT scaled here.
    decode(z (B, h, w, latent_channels), unscaled) -> (B, h*f, w*f, out_channels).
    __call__(x, key=None, sample=False) -> decode(posterior sample or mode): a reconstruction.
  The scaled-latent interface generators use is `encode` / `decode` at module level.

  Attributes: the diffusers config fields in_channels, out_channels, block_out_channels,
    layers_per_block, latent_channels, norm_num_groups, use_quant_conv, use_post_quant_conv,
    mid_block_add_attention, scaling_factor, shift_factor (None = 0; diffusers' latent
    transform is (z - shift) * scale); dtype is the computation dtype (params stay float32).
    The encoder always has double_z (mean and log-variance), as diffusers' AutoencoderKL.
  """
  in_channels: int = 3
  out_channels: int = 3
  block_out_channels: Sequence[int] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  mid_block_add_attention: bool = True
  scaling_factor: float = SD_SCALING_FACTOR
  shift_factor: Optional[float] = None
  dtype: jnp.dtype = jnp.float32

  @property
  def downsampling_factor(self) -> int:
    """f = 2^(len(block_out_channels) - 1): image side / latent side (8 for SD)."""
    return 2 ** (len(self.block_out_channels) - 1)

  def setup(self):
    for c in self.block_out_channels:
      if c % self.norm_num_groups:
        raise VAEInputError(f"AutoencoderKL: block_out_channels {tuple(self.block_out_channels)} "
                            f"must be multiples of norm_num_groups {self.norm_num_groups}")
    common = dict(block_out_channels=tuple(self.block_out_channels),
                  layers_per_block=self.layers_per_block, norm_num_groups=self.norm_num_groups,
                  mid_block_add_attention=self.mid_block_add_attention, dtype=self.dtype)
    self.encoder = Encoder(out_channels=self.latent_channels, double_z=True, **common)
    self.decoder = Decoder(out_channels=self.out_channels, **common)
    k = 2 * self.latent_channels
    self.quant_conv = (_conv(k, 1, self.dtype, "quant_conv") if self.use_quant_conv else None)
    self.post_quant_conv = (_conv(self.latent_channels, 1, self.dtype, "post_quant_conv")
                            if self.use_post_quant_conv else None)

  def _check(self, x: Array, channels: int, what: str, multiple: int) -> None:
    if x.ndim != 4 or x.shape[-1] != channels:
      raise VAEInputError(f"AutoencoderKL.{what}: expected (B, H, W, {channels}) NHWC, got shape "
                          f"{tuple(x.shape)}")
    if x.shape[1] % multiple or x.shape[2] % multiple:
      raise VAEInputError(f"AutoencoderKL.{what}: H and W must be multiples of {multiple}, got "
                          f"{tuple(x.shape[1:3])}")

  def encode(self, x: Array) -> DiagonalGaussian:
    """Posterior q(z | x): x (B, H, W, in_channels) -> DiagonalGaussian (B, H/f, W/f, latent_channels),
    moments = quant_conv(encoder(x)) (diffusers AutoencoderKL._encode)."""
    self._check(x, self.in_channels, "encode", self.downsampling_factor)
    h = self.encoder(x.astype(self.dtype))
    if self.quant_conv is not None:
      h = self.quant_conv(h)
    return DiagonalGaussian.from_moments(h)

  def decode(self, z: Array) -> Array:
    """Unscaled latents z (B, h, w, latent_channels) -> image (B, h*f, w*f, out_channels) in the
    computation dtype: decoder(post_quant_conv(z)) (diffusers AutoencoderKL._decode)."""
    self._check(z, self.latent_channels, "decode", 1)
    z = z.astype(self.dtype)
    if self.post_quant_conv is not None:
      z = self.post_quant_conv(z)
    return self.decoder(z)

  def __call__(self, x: Array, key: Optional[Array] = None, sample: bool = False) -> Array:
    """Reconstruction decode(z), z the posterior mode or (sample=True) a sample drawn with key;
    (B, H, W, in_channels) -> (B, H, W, out_channels). Used by init to create every parameter."""
    posterior = self.encode(x)
    return self.decode(_latent(posterior, key, sample))


def _latent(posterior: DiagonalGaussian, key: Optional[Array], sample: bool) -> Array:
  if not sample:
    return posterior.mode()
  if key is None:
    raise VAEInputError("VAE encode: sample=True needs a PRNG key")
  return posterior.sample(key)


def sd_vae(**overrides) -> AutoencoderKL:
  """The SD f8c4 VAE config of `stabilityai/sd-vae-ft-ema` / `sd-vae-ft-mse` (83,653,863
  parameters): block_out_channels (128, 256, 512, 512), layers_per_block 2, latent_channels 4,
  norm_num_groups 32, scaling_factor 0.18215, shift_factor None. `overrides` change fields."""
  cfg = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 512, 512),
             layers_per_block=2, latent_channels=4, norm_num_groups=32,
             scaling_factor=SD_SCALING_FACTOR, shift_factor=None)
  unknown = sorted(set(overrides) - {f for f in AutoencoderKL.__dataclass_fields__
                                     if f not in ("parent", "name")})
  if unknown:
    raise VAEInputError(f"sd_vae: unknown AutoencoderKL fields {unknown}")
  return AutoencoderKL(**{**cfg, **overrides})


def _jitted(vae: AutoencoderKL, which: str):
  """jax.jit of vae.apply(method=encode / decode), cached per (vae config, method)."""
  return _jitted_cached(vae.clone(block_out_channels=tuple(vae.block_out_channels)), which)


@functools.lru_cache(maxsize=16)
def _jitted_cached(vae: AutoencoderKL, which: str):
  if which == "encode":
    def fn(params, x):
      return vae.apply({"params": params}, x, method=AutoencoderKL.encode)
  else:
    def fn(params, z):
      return vae.apply({"params": params}, z, method=AutoencoderKL.decode)
  return jax.jit(fn)


def encode(params: dict, x: Array, key: Optional[Array] = None, sample: bool = False,
           vae: Optional[AutoencoderKL] = None) -> Array:
  """Images -> the scaled latents a latent generator works on.

  Args:
    params: the VAE's params tree (`cmjax.weights.vae_diffusers` converts diffusers weights).
    x: (B, H, W, 3) images in [-1, 1], NHWC; H, W multiples of f (8 for SD).
    key: PRNG key, needed only with sample=True.
    sample: False -> the posterior mean (mode); True -> mean + std * eps, eps ~ N(0, I) from key.
    vae: the AutoencoderKL module; None = `sd_vae()`.
  Returns:
    (B, H/f, W/f, latent_channels) float32 latents (z - shift_factor) * scaling_factor
    (0.18215 for SD, shift 0), as diffusers pipelines scale them.
  """
  vae = sd_vae() if vae is None else vae
  posterior = _jitted(vae, "encode")(params, jnp.asarray(x))
  z = _latent(posterior, key, sample)
  return (z - (vae.shift_factor or 0.0)) * vae.scaling_factor


def decode(params: dict, z: Array, vae: Optional[AutoencoderKL] = None) -> Array:
  """Scaled latents (as returned by `encode`) -> images.

  Args:
    params: the VAE's params tree.
    z: (B, h, w, latent_channels) scaled latents; divided by scaling_factor and shifted back by
      shift_factor before the decoder (z / scale + shift).
    vae: the AutoencoderKL module; None = `sd_vae()`.
  Returns:
    (B, h*f, w*f, 3) images, nominally in [-1, 1] (not clipped), in the VAE's computation dtype.
  """
  vae = sd_vae() if vae is None else vae
  z = jnp.asarray(z, jnp.float32) / vae.scaling_factor + (vae.shift_factor or 0.0)
  return _jitted(vae, "decode")(params, z)
