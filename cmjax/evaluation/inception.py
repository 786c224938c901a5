"""Inception-v3 pool3 features for FID, the "TF-legacy" network of the `pytorch-fid` package, in linen.

Inception-v3: Szegedy et al. 2016, "Rethinking the Inception Architecture for Computer Vision"
(arXiv:1512.00567). FID: Heusel et al. 2017, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium" (arXiv:1706.08500), Eq. 6:

  FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^{1/2}),

with (mu, S) the mean/covariance of the 2048-d pool3 features computed here; use
cmjax.evaluation.frechet.feature_statistics / frechet_distance on them.

This reproduces `pytorch_fid.inception.InceptionV3([3])` (pytorch-fid 0.3.0, `fid_inception_v3()`), which
is the 2015 TensorFlow Inception graph used by the original TTUR FID code, with its quirks:
  * average pools inside Mixed_5b/5c/5d (FIDInceptionA), Mixed_6b-6e (FIDInceptionC) and Mixed_7b
    (FIDInceptionE_1) ignore the zero padding (count_include_pad=False, TF's "SAME" average pool);
  * Mixed_7c (FIDInceptionE_2) uses a 3x3/1 MAX pool in its pool branch;
  * BatchNorm eps = 0.001; convs have no bias.
Input pipeline as pytorch-fid: bilinear resize to 299x299 (half-pixel centres, no antialiasing, i.e.
torch F.interpolate(mode="bilinear", align_corners=False)) then the network sees values in [-1, 1]
(pytorch-fid's normalize_input maps its [0, 1] input by 2x - 1; resizing commutes with that affine map).

Conventions here: NHWC; images are float (B, H, W, 3) in [-1, 1] (what cmjax samplers produce), any
H, W (resized to 299). uint8 images in [0, 255]: `features_from_uint8` (x / 127.5 - 1, equal to pytorch-fid's
ToTensor + 2x - 1 up to float rounding). Grayscale (B, H, W, 1) must be repeated to RGB explicitly with
`repeat_grayscale`. BatchNorm runs in inference mode and is NOT folded into the convs: each conv layer keeps
the four torch tensors (bn/scale, bn/bias, bn/mean, bn/var) so the .npz mirrors the torch state dict
one-to-one; y = (x - mean) * scale / sqrt(var + 0.001) + bias.

Weights: the FID weights file is pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (~92 MB), released at
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
(pytorch-fid downloads it into ~/.cache/torch/hub/checkpoints on first use). Nothing is downloaded here:
fetch it on a connected machine, then convert (needs torch; pytorch-fid for the default path):
  python scripts/convert_inception_weights.py --out inception_fid.npz \\
      --torch-weights pt_inception-2015-12-05-6726825d.pth
and `feats = make_feature_fn(load_inception_params("inception_fid.npz"))(images)`. Random weights
(`--random`) are for tests only and give meaningless FIDs.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.arrays import repeat_grayscale  # noqa: F401 - part of this module's API
import numpy as np

from cmjax.param_files import checked_params, flatten_params, read_npz, unflatten_params

Array = jax.Array

SIZE = 299  # the network's input resolution
FEATURE_DIM = 2048
BN_EPS = 1e-3
BN_KEYS = ("scale", "bias", "mean", "var")


def _pad(p: int | tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  ph, pw = (p, p) if isinstance(p, int) else p
  return ((ph, ph), (pw, pw))


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: conv (no bias) -> inference BatchNorm(eps 1e-3) -> ReLU.

  Params: conv/kernel (kh, kw, I, O) HWIO; bn/{scale, bias, mean, var} (O,).
  """
  features: int
  kernel: int | tuple[int, int]
  strides: int = 1
  padding: int | tuple[int, int] = 0  # torch-style symmetric padding (int or (ph, pw))
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k = (self.kernel, self.kernel) if isinstance(self.kernel, int) else tuple(self.kernel)
    x = nn.Conv(self.features, k, strides=(self.strides, self.strides), padding=_pad(self.padding),
                use_bias=False, precision=self.precision, name="conv")(x)
    return nn.relu(FrozenBatchNorm(name="bn")(x))


class FrozenBatchNorm(nn.Module):
  """Inference BatchNorm over the last axis: (x - mean) * scale / sqrt(var + 1e-3) + bias."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    mean = self.param("mean", nn.initializers.zeros, (c,))
    var = self.param("var", nn.initializers.ones, (c,))
    return (x - mean) * (scale * jax.lax.rsqrt(var + BN_EPS)) + bias


def _avg_pool_3x3(x: Array) -> Array:
  """3x3/1 average pool, padding 1, padded zeros NOT counted (TF "SAME"; count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x: Array, stride: int, pad: int = 0) -> Array:
  return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=_pad(pad))


class InceptionA(nn.Module):
  """Mixed_5b/5c/5d (FIDInceptionA): (B, 35, 35, C) -> (B, 35, 35, 224 + pool_features)."""
  pool_features: int
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(64, 1, name="branch1x1")(x)
    b5 = conv(64, 5, padding=2, name="branch5x5_2")(conv(48, 1, name="branch5x5_1")(x))
    b3 = conv(64, 1, name="branch3x3dbl_1")(x)
    b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(conv(96, 3, padding=1, name="branch3x3dbl_2")(b3))
    bp = conv(self.pool_features, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (torchvision InceptionB): (B, 35, 35, 288) -> (B, 17, 17, 768)."""
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(384, 3, strides=2, name="branch3x3")(x)
    bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(conv(64, 1, name="branch3x3dbl_1")(x))
    bd = conv(96, 3, strides=2, name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b-6e (FIDInceptionC): (B, 17, 17, 768) -> (B, 17, 17, 768)."""
  channels_7x7: int
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    c7 = self.channels_7x7
    b1 = conv(192, 1, name="branch1x1")(x)
    b7 = conv(c7, 1, name="branch7x7_1")(x)
    b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7)
    bd = conv(c7, 1, name="branch7x7dbl_1")(x)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd)
    bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd)
    bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd)
    bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd)
    bp = conv(192, 1, name="branch_pool")(_avg_pool_3x3(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (torchvision InceptionD): (B, 17, 17, 768) -> (B, 8, 8, 1280)."""
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    b3 = conv(320, 3, strides=2, name="branch3x3_2")(conv(192, 1, name="branch3x3_1")(x))
    b7 = conv(192, 1, name="branch7x7x3_1")(x)
    b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
    b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
    b7 = conv(192, 3, strides=2, name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b (FIDInceptionE_1, avg pool) / Mixed_7c (FIDInceptionE_2, max pool): -> (B, 8, 8, 2048)."""
  max_pool_branch: bool
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    b1 = conv(320, 1, name="branch1x1")(x)
    b3 = conv(384, 1, name="branch3x3_1")(x)
    b3 = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3)], axis=-1)
    bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(conv(448, 1, name="branch3x3dbl_1")(x))
    bd = jnp.concatenate([conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd),
                          conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd)], axis=-1)
    pooled = _max_pool(x, 1, pad=1) if self.max_pool_branch else _avg_pool_3x3(x)
    bp = conv(192, 1, name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3FID(nn.Module):
  """pytorch-fid's FID Inception-v3 up to pool3: (B, H, W, 3) in [-1, 1], already resized -> (B, 2048).

  No resizing happens here (see inception_features). Param names follow the torch modules
  (Conv2d_1a_3x3, ..., Mixed_7c/branch_pool, each with conv/ and bn/).
  """
  precision: Any = None

  @nn.compact
  def __call__(self, x: Array) -> Array:
    conv = functools.partial(BasicConv, precision=self.precision)
    p = dict(precision=self.precision)
    x = conv(32, 3, strides=2, name="Conv2d_1a_3x3")(x)
    x = conv(32, 3, name="Conv2d_2a_3x3")(x)
    x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x)
    x = _max_pool(x, 2)
    x = conv(80, 1, name="Conv2d_3b_1x1")(x)
    x = conv(192, 3, name="Conv2d_4a_3x3")(x)
    x = _max_pool(x, 2)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name, **p)(x)
    x = InceptionB(name="Mixed_6a", **p)(x)
    for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
      x = InceptionC(c7, name=name, **p)(x)
    x = InceptionD(name="Mixed_7a", **p)(x)
    x = InceptionE(max_pool_branch=False, name="Mixed_7b", **p)(x)
    x = InceptionE(max_pool_branch=True, name="Mixed_7c", **p)(x)
    return jnp.mean(x, axis=(1, 2))  # AdaptiveAvgPool2d((1, 1)) + flatten


# ---------------------------------------------------------------- inputs



def resize_to_inception(x: Array) -> Array:
  """Bilinear (B, H, W, C) -> (B, 299, 299, C), half-pixel centres, no antialiasing.

  Equals torch F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False), as pytorch-fid.
  """
  if x.shape[1:3] == (SIZE, SIZE):
    return x
  return jax.image.resize(x, (x.shape[0], SIZE, SIZE, x.shape[3]), method="bilinear", antialias=False)


def _check_images(x) -> None:
  shape = tuple(getattr(x, "shape", ()))
  if len(shape) != 4:
    raise ValueError(f"Inception expects (B, H, W, 3) images, got shape {shape}")
  if shape[-1] == 1:
    raise ValueError(f"Inception expects RGB (B, H, W, 3) images, got 1 channel {shape}; "
                     "use cmjax.evaluation.inception.repeat_grayscale(x) to repeat it to 3")
  if shape[-1] != 3:
    raise ValueError(f"Inception expects RGB (B, H, W, 3) images, got shape {shape}")


def inception_features(params: dict, images: Array, precision: Any = "highest") -> Array:
  """Pure (jittable) pool3 features: images (B, H, W, 3) float in [-1, 1] -> (B, 2048) float32.

  Resizes to 299x299 first (resize_to_inception). precision: conv precision ("highest" = full float32
  on every backend; None/"default" lets GPUs/TPUs use TF32/bf16 passes, faster but ~1e-3 relative noise).
  """
  _check_images(images)
  x = resize_to_inception(jnp.asarray(images, jnp.float32))
  return InceptionV3FID(precision=precision).apply({"params": params}, x)


@functools.partial(jax.jit, static_argnames="precision")
def _features_299(params: dict, x: Array, precision: Any) -> Array:
  return InceptionV3FID(precision=precision).apply({"params": params}, x)


_resize_jit = jax.jit(lambda x: resize_to_inception(jnp.asarray(x, jnp.float32)))


def make_feature_fn(params: dict, precision: Any = "highest") -> Callable[[Array], Array]:
  """Returns fn(images (B, H, W, 3) float in [-1, 1]) -> (B, 2048) float32 pool3 features (jitted).

  The resize and the network are compiled separately, so the expensive network compiles once per batch
  size whatever the input resolution. params are passed as a runtime argument (not baked into the
  compiled program as ~95 MB of constants). FID = frechet_distance(*feature_statistics(f_real),
  *feature_statistics(f_fake)) over >= 2048 images per set (50k is standard).
  """
  params = jax.tree.map(jnp.asarray, params)

  def features(images: Array) -> Array:
    _check_images(images)
    return _features_299(params, _resize_jit(images), precision)

  return features


def features_from_uint8(feature_fn: Callable[[Array], Array], images) -> Array:
  """uint8 images (B, H, W, 3) in [0, 255] -> feature_fn(images / 127.5 - 1), e.g. (B, 2048)."""
  images = np.asarray(images) if not isinstance(images, jax.Array) else images
  if images.dtype != np.uint8:
    raise ValueError(f"features_from_uint8 expects uint8 images, got dtype {images.dtype}")
  return feature_fn(jnp.asarray(images, jnp.float32) / 127.5 - 1.0)


# ---------------------------------------------------------------- weights


def init_inception_params(rng: Array) -> dict:
  """Random params of the network's shapes, for shapes/tests only (NOT the FID network): conv
  kernels ~ N(0, 1 / fan_in) (flax's LeCun-normal default), batch norms the identity (mean 0,
  var 1, scale 1, bias 0). rng: PRNG key. Drawn on the host from a seed taken from rng: an eager
  flax init would compile hundreds of small ops and run the network once (~10 s on a CPU)."""
  seed = np.asarray(jax.random.key_data(rng)).ravel().astype(np.uint32)
  gen = np.random.default_rng(seed)
  flat = {}
  for key, shape in param_shapes().items():
    leaf = key.rsplit("/", 1)[-1]
    if leaf == "kernel":
      flat[key] = (gen.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]))).astype(np.float32)
    else:
      flat[key] = (np.ones if leaf in ("var", "scale") else np.zeros)(shape, np.float32)
  return jax.tree.map(jnp.asarray, unflatten_params(flat))


@functools.lru_cache(maxsize=1)
def _param_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
  tree = jax.eval_shape(lambda k: InceptionV3FID().init(k, jnp.zeros((1, SIZE, SIZE, 3), jnp.float32)),
                        jax.random.key(0))["params"]
  return tuple((k, tuple(v.shape)) for k, v in flatten_params(tree).items())


def param_shapes() -> dict[str, tuple[int, ...]]:
  """Flat key ('Mixed_7c/branch_pool/bn/var', ...) -> expected shape (470 keys), without allocating."""
  return dict(_param_shapes())


def load_inception_params(path: str | os.PathLike) -> dict:
  """Reads FID-Inception weights from a flat '/'-keyed .npz -> nested params dict of float32 arrays.

  Raises a one-line ValueError naming the first missing key, the first wrongly-shaped key (with both
  shapes), or the unexpected keys.
  """
  path = os.fspath(path)
  if not path.endswith(".npz"):
    raise ValueError(f"Inception weights must be an .npz (see scripts/convert_inception_weights.py), got {path}")
  arrays = read_npz(path, "Inception weights")
  expected = param_shapes()
  return checked_params(arrays, expected, path, "Inception")


__all__: Sequence[str] = (
    "InceptionV3FID", "features_from_uint8", "inception_features", "init_inception_params",
    "load_inception_params", "make_feature_fn", "param_shapes", "repeat_grayscale", "resize_to_inception",
)
