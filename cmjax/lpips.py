"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
arXiv:1801.03924, Eq. 1) as a per-example distance d(a, b) for consistency-model training.

A linen port of the `lpips` PyPI package, net='vgg', version 0.1:

  d(x, x0) = sum_l 1/(H_l W_l) sum_{h,w} sum_c w_{l,c} (yhat^l_hwc - yhat0^l_hwc)^2

(Eq. 1, || w_l * (yhat^l_hw - yhat0^l_hw) ||_2^2, as the package implements it: the stored w_l multiplies
the squared difference, i.e. it is the square of the paper's w_l), where yhat^l are the VGG16 relu{1_2,2_2,3_3,4_3,5_3} activations of the ScalingLayer-normalised image,
unit-normalised over channels (x / (sqrt(sum_c x^2) + 1e-10)), and w_l >= 0 are the per-channel "lin"
weights (a 1x1 conv with one output and no bias), learned on human 2AFC judgements (BAPPS).

Weights. Two parts, both needed for the real metric:
  * the lin layers: shipped inside the lpips package at `lpips/weights/v0.1/vgg.pth` (no download);
  * the VGG16 backbone: torchvision's ImageNet weights (`vgg16-397923af.pth`), which torchvision downloads
    on first use (into ~/.cache/torch/hub/checkpoints) unless already cached.
Convert with (needs torch, torchvision and lpips installed):
  python scripts/convert_lpips_weights.py --out lpips_vgg.npz                      # ImageNet backbone
  python scripts/convert_lpips_weights.py --out x.npz --vgg-weights vgg16-397923af.pth   # offline
  python scripts/convert_lpips_weights.py --out x.npz --random-backbone --seed 0   # tests only
then `params = load_lpips_params("lpips_vgg.npz")`. A random backbone (pnet_rand) is NOT a perceptual metric.

Use as a distance: `make_lpips_distance(params, resize=224)` -> fn(a, b) with a, b (B, H, W, 3) in [-1, 1]
returning (B,), like cmjax/distances.py. `resize` bilinearly resamples both inputs first (half-pixel
centres, no antialiasing: torch's F.interpolate(mode="bilinear", align_corners=False)); the CM paper's code
(openai/consistency_models, cm/karras_diffusion.py) upsamples images smaller than 256 to 224 this way before
LPIPS. Note that code calls piq's LPIPS(replace_pooling=True) (average instead of max pooling, inputs in
[0, 1]); this module reproduces the `lpips` package instead, so the two losses are close but not identical.
Grayscale images must be repeated to 3 channels explicitly (`repeat_grayscale`).
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.arrays import repeat_grayscale  # noqa: F401 - part of this module's API
import numpy as np

from cmjax.param_files import checked_params, flatten_params, read_npz

from cmjax.distances import safe_sqrt

Array = jax.Array

# lpips.ScalingLayer: (x - shift) / scale, per RGB channel, for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # lpips.normalize_tensor
# torchvision vgg16 `features`: conv widths per block; a 2x2/2 max-pool precedes blocks 2-5.
VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
MIN_SIZE = 16  # four 2x2 pools: relu5_3 needs H, W >= 16


def scale_input(x: Array) -> Array:
  """lpips' ScalingLayer: (B, H, W, 3) in [-1, 1] -> (B, H, W, 3) roughly ImageNet-standardised."""
  return (x - jnp.asarray(SHIFT, x.dtype)) / jnp.asarray(SCALE, x.dtype)


def normalize_channels(x: Array) -> Array:
  """x / (||x||_2 over channels + 1e-10): (B, h, w, C) -> (B, h, w, C).

  The norm uses safe_sqrt, so an all-zero feature vector has a zero (not NaN) gradient; values are
  identical to lpips.normalize_tensor.
  """
  return x / (safe_sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + EPS)



def resize_images(x: Array, size: int | Sequence[int]) -> Array:
  """Bilinear resample (B, H, W, C) -> (B, h, w, C), size = h (square) or (h, w).

  Half-pixel centres and no antialiasing, i.e. torch F.interpolate(mode="bilinear", align_corners=False).
  """
  h, w = (size, size) if isinstance(size, int) else tuple(size)
  return jax.image.resize(x, (x.shape[0], h, w, x.shape[3]), method="bilinear", antialias=False)


class VGG16Features(nn.Module):
  """The 13 convs of torchvision's vgg16 `features` (3x3, pad 1, ReLU; 2x2 max-pool between blocks).

  Input (B, H, W, 3) NHWC (already ScalingLayer-normalised); returns the 5 activations relu1_2 (B, H, W, 64),
  relu2_2 (B, H/2, W/2, 128), relu3_3 (B, H/4, W/4, 256), relu4_3 (B, H/8, W/8, 512), relu5_3
  (B, H/16, W/16, 512) (floor division, as torch's MaxPool2d(2, 2)). Params: conv{block}_{i}/{kernel,bias}.
  """

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, ...]:
    feats = []
    for b, widths in enumerate(VGG16_BLOCKS):
      if b > 0:
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
      for i, width in enumerate(widths):
        x = nn.relu(nn.Conv(width, (3, 3), padding=1, name=f"conv{b + 1}_{i + 1}")(x))
      feats.append(x)
    return tuple(feats)


class LPIPS(nn.Module):
  """LPIPS-VGG v0.1 distance: a, b (B, H, W, 3) in [-1, 1] -> (B,) (or also the (5, B) per-layer terms).

  Attributes:
    resize: if set, bilinearly resample both inputs to this size (int or (h, w)) first; see resize_images.
  Params: vgg/conv*/{kernel,bias} (HWIO) and lin{0..4}/kernel of shape (1, 1, C_l, 1).
  """
  resize: int | tuple[int, int] | None = None

  @nn.compact
  def __call__(self, a: Array, b: Array, return_per_layer: bool = False):
    _check_images(a, b)
    if self.resize is not None:
      a, b = resize_images(a, self.resize), resize_images(b, self.resize)
    if min(a.shape[1:3]) < MIN_SIZE:
      raise ValueError(f"LPIPS-VGG needs H, W >= {MIN_SIZE} (after resize), got {a.shape}")
    vgg = VGG16Features(name="vgg")
    # Two separate calls (not one concatenated batch) so identical inputs give bitwise-identical features.
    fa, fb = vgg(scale_input(a)), vgg(scale_input(b))
    per_layer = []
    for k, (x, y) in enumerate(zip(fa, fb)):
      diff = jnp.square(normalize_channels(x) - normalize_channels(y))
      lin = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}")(diff)  # (B, h, w, 1)
      per_layer.append(jnp.mean(lin, axis=(1, 2, 3)))
    total = sum(per_layer[1:], per_layer[0])
    return (total, jnp.stack(per_layer)) if return_per_layer else total


def _check_images(a: Array, b: Array) -> None:
  if a.shape != b.shape:
    raise ValueError(f"LPIPS inputs must have equal shapes, got {a.shape} and {b.shape}")
  if a.ndim != 4:
    raise ValueError(f"LPIPS expects (B, H, W, 3) images, got shape {a.shape}")
  if a.shape[-1] == 1:
    raise ValueError(f"LPIPS expects RGB (B, H, W, 3) images, got 1 channel {a.shape}; "
                     "use cmjax.lpips.repeat_grayscale(x) to repeat it to 3")
  if a.shape[-1] != 3:
    raise ValueError(f"LPIPS expects RGB (B, H, W, 3) images, got shape {a.shape}")


def init_lpips_params(rng: Array) -> dict:
  """Random LPIPS params (for tests/shapes only: NOT a perceptual metric). rng: a PRNG key."""
  x = jnp.zeros((1, 32, 32, 3), jnp.float32)
  return LPIPS().init(rng, x, x)["params"]


def param_shapes() -> dict[str, tuple[int, ...]]:
  """Flat key ('vgg/conv1_1/kernel', 'lin0/kernel', ...) -> expected shape, computed without allocating."""
  tree = jax.eval_shape(init_lpips_params, jax.random.key(0))
  return {k: tuple(v.shape) for k, v in flatten_params(tree).items()}


def _read_arrays(path: str) -> dict[str, np.ndarray]:
  if path.endswith(".npz"):
    return read_npz(path, "LPIPS weights")
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file
    except ImportError as e:
      raise ImportError(f"reading {path} needs the `safetensors` package (pip install safetensors), "
                        "or convert to .npz with scripts/convert_lpips_weights.py") from e
    return load_file(path)
  raise ValueError(f"LPIPS weights must be .npz or .safetensors, got {path}")


def load_lpips_params(path: str | os.PathLike) -> dict:
  """Reads LPIPS-VGG weights (flat '/'-keyed .npz or .safetensors) -> nested params dict of float32 arrays.

  Raises a one-line ValueError naming the first missing key, the first wrongly-shaped key (with both
  shapes), or the unexpected keys.
  """
  path = os.fspath(path)
  arrays = _read_arrays(path)
  expected = param_shapes()
  return checked_params(arrays, expected, path, "LPIPS")


def lpips_distance(params: dict, a: Array, b: Array, resize: int | tuple[int, int] | None = None) -> Array:
  """LPIPS with params as an explicit argument: a, b (B, H, W, 3) in [-1, 1] -> (B,)."""
  return LPIPS(resize=resize).apply({"params": params}, a, b)


def make_lpips_distance(params: dict,
                        resize: int | tuple[int, int] | None = None) -> Callable[[Array, Array], Array]:
  """Returns d(a, b): a, b (B, H, W, 3) in [-1, 1] -> (B,), the cmjax/distances.py signature.

  Gradients flow to a and b only (params are fixed). The params are closed over, so under jit they
  become constants of the compiled program (~59 MB float32 for VGG16); to keep them a runtime argument
  instead, call lpips_distance(params, a, b, resize) inside the jitted function.
  """
  params = jax.tree.map(jnp.asarray, params)

  def distance(a: Array, b: Array) -> Array:
    return lpips_distance(params, a, b, resize)

  return distance
