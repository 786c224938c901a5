"""Image grids, uint8 conversion and the one image-file decoder (`load_image`).

`load_image` is what every image file read by cmjax goes through (folder data sets, edit
inputs): Pillow opens the file and the pixel values are scaled by the image's own bit depth, so a
16-bit PNG is not clipped to white by Pillow's `convert()` (which clips mode I;16 at 255).
"""
from __future__ import annotations

import os

import numpy as np

from cmjax.errors import DataError

# Pillow modes holding integers of more than 8 bits: the full scale of each.
_WIDE_INT_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0}
# ITU-R 601-2 luma, what Pillow's convert('L') uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _pixels(im) -> np.ndarray:
  """(H, W, 1 or 3) float32 in [0, 1] of an opened PIL image, scaled by its bit depth; alpha is
  dropped (the stored colour is kept, not composited)."""
  mode = im.mode
  if mode in _WIDE_INT_MODES:
    return (np.asarray(im).astype(np.float32) / _WIDE_INT_MODES[mode])[..., None]
  if mode in ("I", "I;16S", "I;32", "I;32S"):
    a = np.asarray(im.convert("I") if mode != "I" else im).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
      raise ValueError(f"a 32-bit integer image (mode {mode}) with values in [{a.min()}, "
                       f"{a.max()}] has no known full scale (only 0..65535, 16-bit data, is read)")
    return (a.astype(np.float32) / 65535.0)[..., None]
  if mode == "F":
    a = np.asarray(im, np.float32)
    if a.size and not (np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0):
      raise ValueError("a floating-point image (mode F) must hold values in [0, 1]")
    return a[..., None]
  if mode in ("1", "L", "LA", "La"):
    return (np.asarray(im.convert("L"), np.float32) / 255.0)[..., None]
  if mode in ("P", "PA"):
    im = im.convert("RGBA")  # the palette's colours (and its transparency, then dropped)
  return np.asarray(im.convert("RGB"), np.float32)[..., :3] / 255.0  # RGB(A/a/X), CMYK, YCbCr, ...


def load_image(src, channels: int) -> np.ndarray:
  """Decodes an image file -> (H, W, channels) float32 in [0, 1], channels 1 (grey) or 3 (RGB).

  src: a path or a binary file object. Each Pillow mode is scaled by its own bit depth:
  1-bit, L, P (palette, with or without transparency), LA, RGB, RGBA, CMYK (Pillow's
  conversion to RGB) by 255; I;16 / I;16B (16-bit grey PNG, TIFF) by 65535; 32-bit I when its
  values are in 0..65535 (16-bit data held in 32 bits) by 65535, any other range is refused;
  F (float) when in [0, 1]. Alpha is dropped: the stored colour of each pixel is kept (not
  composited on a background). Grey -> RGB repeats the channel; RGB -> grey is ITU-R 601-2 luma
  (0.299 R + 0.587 G + 0.114 B, as Pillow's convert('L'), computed in float32).
  Raises DataError (one line, naming the file) when the file cannot be read or decoded.
  """
  from PIL import Image

  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  name = src if isinstance(src, (str, os.PathLike)) else getattr(src, "name", "<file object>")
  try:
    with Image.open(src) as im:
      im.load()
      x = _pixels(im)
  except Exception as e:  # PIL.UnidentifiedImageError, truncated files (OSError), ValueError, ...
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise DataError(f"cannot read image file {name}: "
                    f"{lines[0] if lines else type(e).__name__}") from None
  if channels == 3 and x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  elif channels == 1 and x.shape[-1] == 3:
    x = (x @ _LUMA)[..., None]
  return np.clip(x, 0.0, 1.0).astype(np.float32)


def load_image_resized(src, shape, resample: str = "bicubic") -> np.ndarray:
  """`load_image` resized to shape = (H, W, C): (H, W, C) float32 in [0, 1] (resized in float,
  see `resize_unit`; an image already of that size is left as it is). DataError as load_image."""
  h, w, c = shape
  return resize_unit(load_image(src, c), h, w, resample)


def unit_to_uint8(x: np.ndarray) -> np.ndarray:
  """[0, 1] floats (any shape) -> uint8, rounded to the nearest of 0..255."""
  return np.round(np.clip(np.asarray(x, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def resize_unit(x: np.ndarray, height: int, width: int, resample: str = "bicubic") -> np.ndarray:
  """(H, W, C) float32 in [0, 1] -> (height, width, C) float32 in [0, 1], each channel resized
  in float by Pillow (mode F, no 8-bit rounding) with 'bicubic', 'lanczos' or 'nearest'."""
  from PIL import Image

  filt = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "nearest": Image.NEAREST}[resample]
  if x.shape[:2] == (height, width):
    return np.asarray(x, np.float32)
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c], np.float32))
                      .resize((width, height), filt), np.float32) for c in range(x.shape[-1])]
  return np.clip(np.stack(chans, axis=-1), 0.0, 1.0)


def to_uint8(images: np.ndarray) -> np.ndarray:
  """[-1, 1] floats (N, H, W, C) -> uint8 (N, H, W, C), clipped."""
  x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
  return np.round(x).astype(np.uint8)


def make_grid(images: np.ndarray, rows: int, pad: int = 1, cols: int | None = None) -> np.ndarray:
  """First rows*cols images of (N, H, W, C) in [-1, 1] -> one uint8 (rows*(H+pad)+pad,
  cols*(W+pad)+pad, C) grid, row by row (cols defaults to rows)."""
  cols = rows if cols is None else cols
  n, h, w, c = images.shape
  if n < rows * cols:
    raise ValueError(f"a {rows}x{cols} grid needs {rows * cols} images, got {n}")
  imgs = to_uint8(images[: rows * cols])
  grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, np.uint8)
  for i in range(rows * cols):
    r, col = divmod(i, cols)
    grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = imgs[i]
  return grid


def save_grid(images: np.ndarray, path: str, rows: int, upscale: int = 4, cols: int | None = None) -> str:
  """Writes a PNG grid of rows x cols (default rows x rows) images, nearest-neighbour upscaled by
  `upscale` for visibility; returns path."""
  from PIL import Image

  grid = make_grid(images, rows, cols=cols)
  if upscale > 1:
    grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  tmp = path + ".tmp"
  img.save(tmp, format="PNG")
  os.replace(tmp, path)
  return path
