"""EDM's "non-leaky" augmentation pipeline (AugmentPipe) in JAX, with its augmentation labels.

Follows NVlabs/edm commit 008a4e5 `training/augment.py` (class AugmentPipe, Karras et al. 2022,
"Elucidating the Design Space of Diffusion-Based Generative Models", Sec. 5 "non-leaky
augmentations" [section number unverified]; the transforms are those of StyleGAN2-ADA, Karras
et al. 2020, "Training Generative Adversarial Networks with Limited Data"). Each transform fires
with probability multiplier * p per example; geometric transforms are applied to a reflection-padded image that
is upsampled 2x with the 'sym6' wavelet low-pass, resampled bilinearly and downsampled with the
same filter, so nothing leaks from outside the image. The network is conditioned on the returned
labels (SongUNet `augment_dim` / `augment_labels`); at sampling time they are zero.

  images, labels = edm_augment(keys, images, EDM_CIFAR10_P, **EDM_CIFAR10)   # (B,H,W,C), (B,9)

Options are EDM's AugmentPipe constructor arguments with its defaults (every transform off); p,
EDM's overall multiplier, is a required argument here.

Layout: images are NHWC (B, H, W, C) float32 here; EDM's are NCHW. EDM's "flip(3)" (width) is
axis 2 here, "flip(2)" (height) axis 1.

Labels, in EDM's order; an entry exists only when its transform's multiplier is > 0 (so the
label size, `augment_dim(**options)`, depends on the options, never on p):
  xflip           w in {0, 1}                         (1 = mirrored along the width)
  yflip           w in {0, 1}                         (1 = mirrored along the height)
  rotate_int      (w in {1,2}, w in {2,3})            (w quarter turns)
  translate_int   (tx / (W max), ty / (H max))        (integer shift over its maximum)
  scale           w                                   (log2 scale / scale_std)
  rotate_frac     (cos w - 1, sin w)                  (w the rotation angle)
  aniso           (w cos r, w sin r)                  (w log2 aniso / aniso_std, r its axis)
  translate_frac  (w_x, w_y)                          (shift / (size * translate_frac_std))
A transform that does not fire gives zeros. EDM's CIFAR-10 setting (`--augment=0.12`,
`EDM_CIFAR10`) gives 9 labels: [xflip, yflip, scale, rot cos-1, rot sin, aniso x, aniso y,
translate x, translate y]. MeanFlow's CIFAR-10 setting (`MEANFLOW_CIFAR10`, Gsunshine/py-meanflow
1f6d72d meanflow/training/train_loop.py: yflip and rotation off) gives 6: [xflip, scale,
aniso x, aniso y, translate x, translate y].

Randomness: `sample_draws` draws every random number EDM draws from a per-example key (so an
example's augmentation depends on its own key only, however the batch is split over devices),
and `augment_from_draws` is the transform given those draws, a pure function tested against
EDM's own outputs with the same draws (tests/test_augment.py). The draws (B, ...) per name:
  xflip_bit, yflip_bit  int32 in {0, 1}    torch.randint(2)
  rotate_int_k          int32 in {0..3}    torch.randint(4)
  translate_int_v       (B, 2) U[0, 1)     torch.rand([2, N]) (x, y)
  scale_z, aniso_z      N(0, 1)            torch.randn
  translate_frac_z      (B, 2) N(0, 1)     torch.randn([2, N]) (x, y)
  rotate_frac_v, aniso_v        U[0, 1)    the angle draws: (2v - 1) pi rotate_frac_max, (2v - 1) pi
  <name>_u, aniso_ur            U[0, 1)    the gates: a transform fires when u < multiplier * p
                                           (aniso_ur < aniso_rotate_prob: rotated aniso axis)

Left out / different from EDM:
- The colour transforms (brightness, contrast, lumaflip, hue, saturation): EDM's constructor has
  them at 0 and neither EDM's nor MeanFlow's CIFAR-10 setting enables them; asking for one
  raises ConfigError.
- EDM pads the whole batch by the largest margin any of its images needs; here each image gets
  its own margin (what EDM does with a batch of one), so an example never depends on the others.
  The margin is chosen so that resampling never reaches its edge; the two agree to float
  rounding (the parity tests compare with EDM's batched call at atol 1e-4).
- JAX needs static shapes: the image is reflection-padded by the largest margin EDM allows
  (W - 1, H - 1) and everything outside the example's own margin is zeroed, which is EDM's
  zero-padded image of the margin's size placed in a fixed canvas.
- EDM runs the geometric stage whenever a geometric multiplier is > 0, even if nothing fires
  (p = 0): the upsample / downsample pair is then the identity up to float rounding (~1e-5);
  so is it here.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from cmjax.data.augment_transforms import blit, geometric_matrix, resample
from cmjax.errors import ConfigError

Array = jax.Array

# EDM train.py --augment=0.12 (its CIFAR-10 default): AugmentPipe(p=0.12, **EDM_CIFAR10).
EDM_CIFAR10 = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
EDM_CIFAR10_P = 0.12
# MeanFlow --use_edm_aug (Gsunshine/py-meanflow 1f6d72d, meanflow/training/train_loop.py).
MEANFLOW_CIFAR10 = dict(xflip=1e8, yflip=0, scale=1, rotate_frac=0, aniso=1, translate_frac=1)
MEANFLOW_CIFAR10_P = 0.12


# EDM's AugmentPipe constructor defaults (colour transforms excluded: see the module docstring).
DEFAULTS = dict(xflip=0.0, yflip=0.0, rotate_int=0.0, translate_int=0.0, translate_int_max=0.125,
                scale=0.0, rotate_frac=0.0, aniso=0.0, translate_frac=0.0, scale_std=0.2,
                rotate_frac_max=1.0, aniso_std=0.2, aniso_rotate_prob=0.5, translate_frac_std=0.125)
COLOUR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
# name -> (the transform it belongs to, kind, per-example shape), in EDM's drawing order.
DRAWS = {
    "xflip_bit": ("xflip", "bit", ()), "xflip_u": ("xflip", "uniform", ()),
    "yflip_bit": ("yflip", "bit", ()), "yflip_u": ("yflip", "uniform", ()),
    "rotate_int_k": ("rotate_int", "quarter", ()), "rotate_int_u": ("rotate_int", "uniform", ()),
    "translate_int_v": ("translate_int", "uniform", (2,)),
    "translate_int_u": ("translate_int", "uniform", ()),
    "scale_z": ("scale", "normal", ()), "scale_u": ("scale", "uniform", ()),
    "rotate_frac_v": ("rotate_frac", "uniform", ()),
    "rotate_frac_u": ("rotate_frac", "uniform", ()),
    "aniso_z": ("aniso", "normal", ()), "aniso_v": ("aniso", "uniform", ()),
    "aniso_u": ("aniso", "uniform", ()), "aniso_ur": ("aniso", "uniform", ()),
    "translate_frac_z": ("translate_frac", "normal", (2,)),
    "translate_frac_u": ("translate_frac", "uniform", ()),
}
_LABELS = {"xflip": ("xflip",), "yflip": ("yflip",), "rotate_int": ("rotate_int_a", "rotate_int_b"),
           "translate_int": ("translate_int_x", "translate_int_y"), "scale": ("scale",),
           "rotate_frac": ("rotate_frac_cos", "rotate_frac_sin"), "aniso": ("aniso_x", "aniso_y"),
           "translate_frac": ("translate_frac_x", "translate_frac_y")}
_GEOMETRIC = ("scale", "rotate_frac", "aniso", "translate_frac")


def augment_options(**options) -> dict:
  """EDM's constructor defaults updated by `options` (floats), checked: ConfigError (one line) for
  an unknown name, a negative value or a colour transform (not ported)."""
  for name in COLOUR:
    if float(options.pop(name, 0.0)) != 0.0:
      raise ConfigError(f"augment: colour transform {name!r} is not ported (cmjax.data.augment "
                        f"has EDM's pixel-blitting and geometric transforms only)")
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ConfigError(f"augment: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
  opts = {k: float(v) for k, v in {**DEFAULTS, **options}.items()}
  bad = [k for k, v in opts.items() if not (math.isfinite(v) and v >= 0)]
  if bad:
    raise ConfigError(f"augment: {bad[0]} must be a finite number >= 0, got {opts[bad[0]]}")
  if opts["aniso_rotate_prob"] > 1:
    raise ConfigError(f"augment: aniso_rotate_prob must be in [0, 1], got "
                      f"{opts['aniso_rotate_prob']}")
  return opts


def _enabled(opts: Mapping) -> tuple:
  return tuple(t for t in _LABELS if opts[t] > 0)


def label_names(**options) -> tuple:
  """Names of the augmentation-label entries for these options, in EDM's order."""
  opts = augment_options(**options)
  return tuple(n for t in _enabled(opts) for n in _LABELS[t])


def augment_dim(**options) -> int:
  """Size of the label vector for these options (SongUNet's `augment_dim`; 9 for EDM_CIFAR10)."""
  return len(label_names(**options))


def _check_p(p) -> None:
  try:
    value = float(p)
  except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return  # traced under jit: checked where it is concrete
  if not 0.0 <= value <= 1.0:
    raise ConfigError(f"augment: p must be in [0, 1], got {value}")


def _check_images(images) -> Array:
  images = jnp.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"augment: images must be (B, H, W, C), got shape {images.shape}")
  if images.shape[1] < 2 or images.shape[2] < 2:
    raise ValueError(f"augment: images must be at least 2x2, got shape {images.shape}")
  return images.astype(jnp.float32)


def _num_keys(keys) -> int:
  if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
    if keys.ndim != 1:
      raise ValueError(f"augment: keys must be (B,) per-example keys, got shape {keys.shape}")
  elif keys.ndim != 2:
    raise ValueError(f"augment: keys must be (B,) per-example keys (raw: (B, 2) uint32), got shape "
                     f"{keys.shape}")
  return keys.shape[0]


def sample_draws(keys: Array, **options) -> dict:
  """Every random number EDM's AugmentPipe draws, per example: (B,) keys -> {name: (B, ...)}.

  Draw i depends on keys[i] only, and each name has its own stream (a transform's draws do not
  change when another transform is switched on or off). Names and laws: the module docstring.
  """
  augment_options(**options)
  _num_keys(keys)
  return _sample(keys)


@jax.jit
@jax.vmap
def _sample(key):
  out = {}
  for k, name in zip(jax.random.split(key, len(DRAWS)), DRAWS):
    _, kind, shape = DRAWS[name]
    if kind == "uniform":
      out[name] = jax.random.uniform(k, shape, jnp.float32)
    elif kind == "normal":
      out[name] = jax.random.normal(k, shape, jnp.float32)
    else:
      out[name] = jax.random.randint(k, shape, 0, 2 if kind == "bit" else 4, jnp.int32)
  return out



def augment_from_draws(images: Array, draws: Mapping[str, Array], p, **options) -> tuple:
  """EDM's AugmentPipe(p, **options)(images) given its random draws (the transform; no randomness).

  Args:
    images: (B, H, W, C) (NHWC; EDM's are NCHW). Square images are needed only for rotate_int.
    draws: {name: (B, ...)} as `sample_draws` returns (names: module docstring); only the draws of
      the enabled transforms are read.
    p: overall probability multiplier in [0, 1] (a float, or a traced scalar under jit).
    options: EDM's AugmentPipe constructor arguments (defaults: EDM's, all transforms off).
  Returns:
    (augmented (B, H, W, C) float32, labels (B, augment_dim(**options)) float32).
  """
  opts = augment_options(**options)
  _check_p(p)
  images = _check_images(images)
  b, h, w, _ = images.shape
  enabled = _enabled(opts)
  if opts["rotate_int"] > 0 and h != w:
    raise ValueError(f"augment: rotate_int needs square images (as EDM), got {h}x{w}")
  needed = [n for n, (t, _, _) in DRAWS.items() if t in enabled]
  missing = [n for n in needed if n not in draws]
  if missing:
    raise ValueError(f"augment: draws lack {missing} for the enabled transforms {list(enabled)}")
  used = {}
  for n in needed:
    value = jnp.asarray(draws[n])
    shape = (b,) + DRAWS[n][2]
    if value.shape != shape:
      raise ValueError(f"augment: draws[{n!r}] must have shape {shape}, got {value.shape}")
    used[n] = value
  frozen = tuple(sorted(opts.items()))
  if isinstance(p, (int, float)):  # a constant: thresholds multiplier * p in double, as EDM
    return _apply_static(images, used, p=float(p), frozen=frozen)
  return _apply_traced(images, used, jnp.asarray(p, jnp.float32), frozen=frozen)


def _apply(images, draws, p, opts):
  h, w = images.shape[1:3]
  geometric = any(opts[t] > 0 for t in _GEOMETRIC)

  def one(image, d):
    labels = []
    image = blit(image, d, p, opts, labels)
    if geometric:
      image = resample(image, geometric_matrix(d, p, opts, h, w, labels))
    labels = jnp.stack([jnp.asarray(x, jnp.float32) for x in labels]) if labels else jnp.zeros((0,))
    return image, labels
  return jax.vmap(one)(images, draws)


@functools.partial(jax.jit, static_argnames=("p", "frozen"))
def _apply_static(images, draws, *, p, frozen):
  return _apply(images, draws, p, dict(frozen))


@functools.partial(jax.jit, static_argnames=("frozen",))
def _apply_traced(images, draws, p, *, frozen):
  return _apply(images, draws, p, dict(frozen))


def edm_augment(keys: Array, images: Array, p, **options) -> tuple:
  """EDM's augmentation of a batch with per-example randomness.

  keys (B,) per-example keys (e.g. `train_step.example_keys`; example i depends on keys[i] only),
  images (B, H, W, C) NHWC, p in [0, 1], options as EDM's AugmentPipe constructor (defaults: all
  off; EDM's CIFAR-10: `edm_augment(keys, x, EDM_CIFAR10_P, **EDM_CIFAR10)`)
  -> (augmented (B, H, W, C) float32, labels (B, augment_dim(**options)) float32).
  """
  augment_options(**options)
  _check_p(p)
  images = _check_images(images)
  if _num_keys(keys) != images.shape[0]:
    raise ValueError(f"augment: {keys.shape[0]} keys for {images.shape[0]} images (one key per "
                     f"example)")
  return augment_from_draws(images, sample_draws(keys, **options), p, **options)


PRESETS = {"edm_cifar10": EDM_CIFAR10, "meanflow_cifar10": MEANFLOW_CIFAR10}


def make_augment(p: float, preset: str) -> Callable:
  """`augment(keys (B,), images (B,H,W,C)) -> (images, labels (B, augment_dim))` for
  `train_step.make_train_step(augment=...)`: `edm_augment` with probability `p` and the options
  of a named preset ('edm_cifar10': EDM's --augment, 'meanflow_cifar10': py-meanflow's)."""
  if preset not in PRESETS:
    raise ConfigError(f"unknown data.augment_preset {preset!r}; known: {sorted(PRESETS)}")
  _check_p(p)
  options = PRESETS[preset]
  return lambda keys, images: edm_augment(keys, images, p, **options)
