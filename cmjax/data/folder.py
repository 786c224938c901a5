"""A plain folder of images as training data (data.name='folder', no labels).

Every file under data.path (searched recursively, following links) whose name
ends in .png, .jpg, .jpeg (or .webp when this Pillow reads WebP), in any
letter case, is one record; records are numbered in sorted order of their
paths relative to data.path, so the order is the same on every machine. A
record is decoded by `cmjax.images.load_image` (every Pillow mode scaled by its
own bit depth: 16-bit PNGs included; grey-scale repeated to RGB; alpha dropped),
rounded to uint8, centre-cropped to a square of side
min(width, height) and resized to data.resolution x data.resolution with
Pillow's LANCZOS filter (as EDM's dataset_tool; an image already of that size
is left as it is): (resolution, resolution, 3) uint8, scaled to [-1, 1] in the
batch. An unreadable or corrupt file raises DataError naming it when it is read.
"""
from __future__ import annotations

import os

import numpy as np

from cmjax import images
from cmjax.data.pipeline import DataError, IndexedSource


def image_extensions() -> tuple[str, ...]:
  """The lower-case file name endings read as images."""
  from PIL import features
  return (".png", ".jpg", ".jpeg") + ((".webp",) if features.check("webp") else ())


def list_images(path: str) -> list[str]:
  """Sorted paths of the image files under `path` (recursive, links followed once); [] if none."""
  exts = image_extensions()
  found, seen = [], set()
  for root, dirs, files in os.walk(path, followlinks=True):
    real = os.path.realpath(root)
    if real in seen:  # a link back up the tree: do not walk it twice
      dirs[:] = []
      continue
    seen.add(real)
    found += [os.path.join(root, f) for f in files if f.lower().endswith(exts)]
  return sorted(found, key=lambda p: os.path.relpath(p, path))


def load_image(path: str, resolution: int) -> np.ndarray:
  """(resolution, resolution, 3) uint8: RGB (`cmjax.images.load_image`, rounded to 8 bits),
  centre-cropped to a square, LANCZOS-resized. DataError naming an unreadable file."""
  from PIL import Image

  im = Image.fromarray(images.unit_to_uint8(images.load_image(path, 3)))
  w, h = im.size
  side = min(w, h)
  left, top = (w - side) // 2, (h - side) // 2
  if (w, h) != (side, side):
    im = im.crop((left, top, left + side, top + side))
  if side != resolution:
    im = im.resize((resolution, resolution), Image.LANCZOS)
  return np.asarray(im, np.uint8)


class FolderSource(IndexedSource):
  """Epoch-shuffled batches of the images of a folder (cmjax.data.pipeline.IndexedSource).

  Args:
    path: the folder (searched recursively). resolution: the side of the square images.
    the rest: as IndexedSource (no labels). Each process decodes only its files of each step.

  Attributes (besides IndexedSource's): files, the sorted image paths (record i = files[i]).
  """

  def __init__(self, path: str, resolution: int, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1, **kw):
    if not path or not os.path.isdir(path):
      raise DataError(f"data.path {path!r} is not a directory")
    if resolution <= 0:
      raise DataError(f"data.resolution must be positive for data.name='folder', got {resolution}")
    self.path = path
    self.resolution = int(resolution)
    self.files = list_images(path)
    if not self.files:
      raise DataError(f"no image files ({', '.join(image_extensions())}) under data.path {path!r}")
    super().__init__(len(self.files), global_batch, seed, process_index, process_count,
                     image_shape=(resolution, resolution, 3), num_classes=0,
                     what=f"{len(self.files)} images under {path}", **kw)

  def read_record(self, index: int):
    """(image (resolution, resolution, 3) uint8, label 0) of file `index`."""
    return load_image(self.files[int(index)], self.resolution), 0
