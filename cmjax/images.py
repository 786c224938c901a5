"""Image grids and uint8 conversion."""
from __future__ import annotations

import os

import numpy as np


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
