"""The per-image transforms of EDM's augmentation pipeline (NVlabs/edm 008a4e5 training/augment.py,
AugmentPipe.forward), for one NHWC image (H, W, C) under vmap: the integer blits (x/y flips,
quarter rotations, integer translation with reflection) and the geometric stage (a 3x3 matrix of
scale, rotation, anisotropy and fractional translation, applied to a reflection-padded image
upsampled 2x with the 'sym6' wavelet low-pass, resampled bilinearly and downsampled with the same
filter). The draws, options and labels are `cmjax.data.augment`'s.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# Low-pass filter of the 'sym6' wavelet, the coefficients hard-coded in EDM's augment.py.
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
_HIGHEST = jax.lax.Precision.HIGHEST  # no TF32 in the filters on GPUs


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

def blit(image, d, p, opts, labels):
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


def geometric_matrix(d, p, opts, h, w, labels):
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


def resample(image, g):
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
