"""Training data sources. A source gives this process's share of the global batch at any step."""
from __future__ import annotations

import numpy as np

from cmjax.data.digits import IMAGE_SHAPE as DIGITS_SHAPE, load_digits_split


class ArraySource:
  """Epoch-shuffled batches from an in-memory array, as a pure function of the step.

  Epoch e uses permutation default_rng([seed, e]); within an epoch, step s takes
  the (s mod steps_per_epoch)-th slice of global_batch examples (the remainder is
  dropped). The data position is the step itself, so a resumed run reads exactly
  the batch it would have read. Each process takes its contiguous slice of every
  global batch.
  """

  def __init__(self, images: np.ndarray, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if global_batch > len(images):
      raise ValueError(f"batch size {global_batch} exceeds the data set size {len(images)}")
    if global_batch % process_count:
      raise ValueError(f"batch size {global_batch} is not divisible by the process count {process_count}")
    self.images = images
    self.global_batch = global_batch
    self.seed = seed
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self.steps_per_epoch = len(images) // global_batch
    self.image_shape = images.shape[1:]

  def batch(self, step: int) -> dict:
    """{'image': (local_batch, H, W, C) float32} of global step `step`."""
    epoch, pos = divmod(int(step), self.steps_per_epoch)
    perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
    start = pos * self.global_batch + self.offset
    return {"image": self.images[perm[start:start + self.local_batch]]}


def _digits(config, process_index, process_count):
  return ArraySource(load_digits_split("train"), config.train.batch_size, config.seed,
                     process_index, process_count)


def _toy2d(name):
  def build(config, process_index, process_count):
    from cmjax.data.toy2d import Toy2DSource
    return Toy2DSource(name, config.train.batch_size, config.seed, process_index, process_count)
  return build


DATASETS = {"digits": _digits, "toy2d_gmm8": _toy2d("gmm8"),
            "toy2d_checkerboard": _toy2d("checkerboard")}
IMAGE_SHAPES = {"digits": DIGITS_SHAPE, "toy2d_gmm8": (2,), "toy2d_checkerboard": (2,)}


def build_source(config, process_index: int = 0, process_count: int = 1):
  """The training source named by config.data.name (`.batch(step)` -> {'image': local batch})."""
  return DATASETS[config.data.name](config, process_index, process_count)
