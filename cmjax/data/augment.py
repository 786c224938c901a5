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
import numpy as np

from cmjax.errors import ConfigError

Array = jax.Array

# EDM train.py --augment=0.12 (its CIFAR-10 default): AugmentPipe(p=0.12, **EDM_CIFAR10).
EDM_CIFAR10 = dict(xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1, translate_frac=1)
EDM_CIFAR10_P = 0.12
# MeanFlow --use_edm_aug (Gsunshine/py-meanflow 1f6d72d, meanflow/training/train_loop.py).
MEANFLOW_CIFAR10 = dict(xflip=1e8, yflip=0, scale=1, rotate_frac=0, aniso=1, translate_frac=1)
MEANFLOW_CIFAR10_P = 0.12

# Low-pass filter of the 'sym6' wavelet, the coefficients hard-coded in EDM's augment.py.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

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
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 in the filters on GPUs


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


# ---------------------------------------------------------------- 3x3 matrices (EDM's helpers)

def _matrix(rows):
  return jnp.stack([jnp.stack([jnp.asarray(x, jnp.float32) for x in row]) for row in rows])


def _translate2d(tx, ty):
  return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]])


def _scale2d(sx, sy):
  return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]])


def _rotate2d(theta):
  return _matrix([[jnp.cos(theta), jnp.sin(-theta), 0], [jnp.sin(theta), jnp.cos(theta), 0],
                  [0, 0, 1]])


def _mm(a, b):
  return jnp.matmul(a, b, precision=_HIGHEST)


# ---------------------------------------------------------------- one example

def _blit(image, d, p, opts, labels):
  """EDM's pixel blitting on one (H, W, C) image; appends the labels."""
  h, w = image.shape[:2]
  if opts["xflip"] > 0:
    k = jnp.where(d["xflip_u"] < opts["xflip"] * p, d["xflip_bit"], 0)
    image = jnp.where(k == 1, image[:, ::-1], image)
    labels.append(k)
  if opts["yflip"] > 0:
    k = jnp.where(d["yflip_u"] < opts["yflip"] * p, d["yflip_bit"], 0)
    image = jnp.where(k == 1, image[::-1], image)
    labels.append(k)
  if opts["rotate_int"] > 0:
    k = jnp.where(d["rotate_int_u"] < opts["rotate_int"] * p, d["rotate_int_k"], 0)
    image = jnp.where((k == 1) | (k == 2), image[:, ::-1], image)
    image = jnp.where((k == 2) | (k == 3), image[::-1], image)
    image = jnp.where((k == 1) | (k == 3), jnp.swapaxes(image, 0, 1), image)
    labels += [(k == 1) | (k == 2), (k == 2) | (k == 3)]
  if opts["translate_int"] > 0:
    v = d["translate_int_v"] * 2 - 1
    v = jnp.where(d["translate_int_u"] < opts["translate_int"] * p, v, jnp.zeros_like(v))
    tx = jnp.round(v[0] * (w * opts["translate_int_max"])).astype(jnp.int32)
    ty = jnp.round(v[1] * (h * opts["translate_int_max"])).astype(jnp.int32)
    x = jnp.arange(w)
    y = jnp.arange(h)
    x = w - 1 - jnp.abs(w - 1 - jnp.mod(x - tx, w * 2 - 2))  # reflection at the borders
    y = h - 1 - jnp.abs(h - 1 - jnp.mod(y + ty, h * 2 - 2))
    image = image[y[:, None], x[None, :]]
    labels += [tx / (w * opts["translate_int_max"]), ty / (h * opts["translate_int_max"])]
  return image


def _geometric_matrix(d, p, opts, h, w, labels):
  """EDM's G_inv (3, 3) for one example (output pixel -> input pixel, centred coordinates)."""
  g = jnp.eye(3, dtype=jnp.float32)
  if opts["scale"] > 0:
    z = jnp.where(d["scale_u"] < opts["scale"] * p, d["scale_z"], 0.0)
    s = jnp.exp2(z * opts["scale_std"])
    g = _mm(g, _scale2d(1 / s, 1 / s))
    labels.append(z)
  if opts["rotate_frac"] > 0:
    a = (d["rotate_frac_v"] * 2 - 1) * (np.pi * opts["rotate_frac_max"])
    a = jnp.where(d["rotate_frac_u"] < opts["rotate_frac"] * p, a, 0.0)
    g = _mm(g, _rotate2d(a))  # rotate2d_inv(-a)
    labels += [jnp.cos(a) - 1, jnp.sin(a)]
  if opts["aniso"] > 0:
    z = jnp.where(d["aniso_u"] < opts["aniso"] * p, d["aniso_z"], 0.0)
    r = (d["aniso_v"] * 2 - 1) * np.pi
    r = jnp.where(d["aniso_ur"] < opts["aniso_rotate_prob"], r, 0.0)
    s = jnp.exp2(z * opts["aniso_std"])
    g = _mm(_mm(_mm(g, _rotate2d(-r)), _scale2d(1 / s, 1 / (1 / s))), _rotate2d(r))
    labels += [z * jnp.cos(r), z * jnp.sin(r)]
  if opts["translate_frac"] > 0:
    z = d["translate_frac_z"]
    z = jnp.where(d["translate_frac_u"] < opts["translate_frac"] * p, z, jnp.zeros_like(z))
    g = _mm(g, _translate2d(-(z[0] * (w * opts["translate_frac_std"])),
                            -(z[1] * (h * opts["translate_frac_std"]))))
    labels += [z[0], z[1]]
  return g


def _filter_axis(x, taps, axis, *, stride=1, dilation=1, pad):
  """1-D correlation of x (H, W, C) along `axis` (0 or 1) with `taps`, zero padding `pad`, input
  dilation (zeros inserted, the 2x upsample) and output stride: torch's conv2d per channel."""
  x = jnp.moveaxis(x, 2, 0)[..., None]  # (C, H, W, 1)
  kernel = jnp.asarray(taps, jnp.float32).reshape((-1, 1, 1, 1) if axis == 0 else (1, -1, 1, 1))
  strides = (stride, 1) if axis == 0 else (1, stride)
  padding = ((pad, pad), (0, 0)) if axis == 0 else ((0, 0), (pad, pad))
  dil = (dilation, 1) if axis == 0 else (1, dilation)
  y = jax.lax.conv_general_dilated(x, kernel, strides, padding, lhs_dilation=dil,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
  return jnp.moveaxis(y[..., 0], 0, 2)


def _geometric(image, g):
  """EDM's 'execute geometric transformations' on one (H, W, C) image with its G_inv (3, 3)."""
  h, w, _ = image.shape
  hz = np.asarray(SYM6, np.float32)
  hz_pad = len(hz) // 4
  cx, cy = (w - 1) / 2, (h - 1) / 2
  corners = jnp.asarray([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], jnp.float32)
  cp = _mm(g, corners.T)  # [xyz, idx]
  margin = jnp.concatenate([-cp[:2], cp[:2]]).max(axis=1)  # [x0, y0, x1, y1]
  margin = margin + jnp.asarray([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, jnp.float32)
  margin = jnp.maximum(margin, 0.0)
  margin = jnp.minimum(margin, jnp.asarray([w - 1, h - 1] * 2, jnp.float32))
  mx0, my0, mx1, my1 = jnp.ceil(margin).astype(jnp.int32)

  # Reflection-pad by the largest margin (W-1, H-1) and zero what lies outside (mx0, mx1, my0, my1):
  # EDM's padded image at offset (ox, oy) of a fixed canvas.
  px, py = w - 1, h - 1
  canvas = jnp.pad(image, ((py, py), (px, px), (0, 0)), mode="reflect")
  ox, oy = px - mx0, py - my0
  cols = jnp.arange(w + 2 * px)
  rows = jnp.arange(h + 2 * py)
  inside = (((rows >= oy) & (rows < py + h + my1))[:, None]
            & ((cols >= ox) & (cols < px + w + mx1))[None, :])
  canvas = jnp.where(inside[..., None], canvas, 0.0)
  g = _mm(_translate2d((mx0 - mx1) / 2, (my0 - my1) / 2), g)

  # Upsample 2x: zeros between the samples, then the reversed filter (EDM: conv_pad = 6).
  conv_pad = (len(hz) + 1) // 2
  canvas = _filter_axis(canvas, hz[::-1], 1, dilation=2, pad=conv_pad)
  canvas = _filter_axis(canvas, hz[::-1], 0, dilation=2, pad=conv_pad)
  g = _mm(_mm(_scale2d(2, 2), g), _scale2d(1 / 2, 1 / 2))
  g = _mm(_mm(_translate2d(-0.5, -0.5), g), _translate2d(0.5, 0.5))

  # Execute: torch's affine_grid + grid_sample (bilinear, zeros outside, align_corners=False) on
  # EDM's upsampled image of size (hi, wi), which starts at (2 oy, 2 ox) in the canvas.
  wo, ho = (w + hz_pad * 2) * 2, (h + hz_pad * 2) * 2
  wi = (2 * (w + mx0 + mx1)).astype(jnp.float32)
  hi = (2 * (h + my0 + my1)).astype(jnp.float32)
  g = _mm(_mm(_scale2d(2 / wi, 2 / hi), g), _scale2d(1 / (2 / wo), 1 / (2 / ho)))
  bx = jnp.linspace(-1.0, 1.0, wo, dtype=jnp.float32) * ((wo - 1) / wo)
  by = jnp.linspace(-1.0, 1.0, ho, dtype=jnp.float32) * ((ho - 1) / ho)
  gx = g[0, 0] * bx[None, :] + g[0, 1] * by[:, None] + g[0, 2]
  gy = g[1, 0] * bx[None, :] + g[1, 1] * by[:, None] + g[1, 2]
  ix = ((gx + 1) * wi - 1) / 2
  iy = ((gy + 1) * hi - 1) / 2
  ix0, iy0 = jnp.floor(ix), jnp.floor(iy)
  ix1, iy1 = ix0 + 1, iy0 + 1
  out = 0.0
  for xs, ys, weight in ((ix0, iy0, (ix1 - ix) * (iy1 - iy)), (ix1, iy0, (ix - ix0) * (iy1 - iy)),
                         (ix0, iy1, (ix1 - ix) * (iy - iy0)), (ix1, iy1, (ix - ix0) * (iy - iy0))):
    valid = (xs >= 0) & (xs < wi) & (ys >= 0) & (ys < hi)
    xc = jnp.clip(xs.astype(jnp.int32) + 2 * ox, 0, canvas.shape[1] - 1)
    yc = jnp.clip(ys.astype(jnp.int32) + 2 * oy, 0, canvas.shape[0] - 1)
    out = out + jnp.where(valid, weight, 0.0)[..., None] * canvas[yc, xc]

  # Downsample 2x with the filter (EDM: conv_pad = 5, stride 2) and crop hz_pad on each side.
  conv_pad = (len(hz) - 1) // 2
  out = _filter_axis(out, hz, 1, stride=2, pad=conv_pad)[:, hz_pad:-hz_pad]
  out = _filter_axis(out, hz, 0, stride=2, pad=conv_pad)[hz_pad:-hz_pad]
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
    image = _blit(image, d, p, opts, labels)
    if geometric:
      image = _geometric(image, _geometric_matrix(d, p, opts, h, w, labels))
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
