"""The embedded default data set: scikit-learn's 8x8 handwritten digits.

`sklearn.datasets.load_digits()` ships 1,797 real 8x8 grey-scale digits (pixel
values 0..16) inside scikit-learn, so the default run needs no download. We
scale them to [-1, 1] and keep them at 8x8x1 (NHWC).

The train / held-out split is fixed (a seeded permutation, independent of any
run seed), so every run, the digits-FD reference statistics and the shipped
classifier agree on which images are held out.
"""
from __future__ import annotations

import functools

import numpy as np

NUM_IMAGES = 1797
NUM_HELDOUT = 360  # ~20%: the real-vs-real FD floor and the classifier's test set
_SPLIT_SEED = 20240101
IMAGE_SHAPE = (8, 8, 1)


@functools.lru_cache(maxsize=None)
def _load_all() -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # local import: sklearn is slow to import

  d = load_digits()
  images = d.images.astype(np.float32) / 16.0 * 2.0 - 1.0  # [0, 16] -> [-1, 1]
  images = images[..., None]  # (1797, 8, 8, 1)
  labels = d.target.astype(np.int32)
  return images, labels


def load_digits_split(split: str = "train", with_labels: bool = False):
  """Returns the digits of one split.

  Args:
    split: 'train' (1,437 images), 'heldout' (360 images) or 'all' (1,797).
    with_labels: also return the int32 class labels, shape (N,).

  Returns:
    images float32 (N, 8, 8, 1) in [-1, 1] (and labels if asked).
  """
  images, labels = _load_all()
  perm = np.random.default_rng(_SPLIT_SEED).permutation(NUM_IMAGES)
  if split == "train":
    idx = np.sort(perm[NUM_HELDOUT:])
  elif split == "heldout":
    idx = np.sort(perm[:NUM_HELDOUT])
  elif split == "all":
    idx = np.arange(NUM_IMAGES)
  else:
    raise ValueError(f"unknown digits split {split!r}; expected 'train', 'heldout' or 'all'")
  if with_labels:
    return images[idx], labels[idx]
  return images[idx]
