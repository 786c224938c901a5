"""2-D toy distributions with exactly known structure, to check methods on exact metrics.

'gmm8': an equal-weight mixture of 8 isotropic Gaussians, means on the unit
circle at angles 2*pi*k/8, per-coordinate std GMM8_STD = 0.05.

'checkerboard': uniform on the 8 black squares of a 4x4 checkerboard spanning
[-1, 1]^2 (square side 0.5); cell (i, j) (column i, row j, counted from the
bottom-left corner) is black when i + j is even, so the square at the
bottom-left corner, (-1, -1) to (-0.5, -0.5), is black.

Both have mean 0; `toy2d_sigma_data` is the data std sqrt(mean per-coordinate
variance) in closed form, used as sigma_data in the preconditioning.
"""
from __future__ import annotations

import numpy as np

from cmjax.data.pipeline import iterate_batches

TOY2D_NAMES = ("gmm8", "checkerboard")

GMM8_RADIUS = 1.0
GMM8_STD = 0.05
_ANGLES = 2.0 * np.pi * np.arange(8) / 8
GMM8_MEANS = GMM8_RADIUS * np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)  # (8, 2) float64

CHECKER_SIDE = 0.5
_CELLS = [(i, j) for j in range(4) for i in range(4) if (i + j) % 2 == 0]
CHECKER_CENTERS = np.array([[-0.75 + CHECKER_SIDE * i, -0.75 + CHECKER_SIDE * j]
                            for i, j in _CELLS], dtype=np.float64)  # (8, 2)


def check_toy2d_name(name: str) -> None:
  """Raises a one-line ValueError if `name` is not a known toy distribution."""
  if name not in TOY2D_NAMES:
    raise ValueError(f"unknown toy2d distribution {name!r}; known: {', '.join(TOY2D_NAMES)}")


def mode_centers(name: str) -> np.ndarray:
  """The (M, 2) float64 mode centres: the 8 Gaussian means, or the 8 black-square centres."""
  check_toy2d_name(name)
  return (GMM8_MEANS if name == "gmm8" else CHECKER_CENTERS).copy()


def toy2d_sigma_data(name: str) -> float:
  """Closed-form data std sqrt(mean per-coordinate variance) of distribution `name`.

  A mixture of equal-weight components with centres mu_k and per-coordinate
  within-component variance v has per-coordinate variance averaged over the two
  coordinates mean_k |mu_k - mu|^2 / 2 + v, with mu the overall mean (0 here).
  gmm8: v = std^2, giving sqrt(r^2 / 2 + std^2) ~= 0.7089. checkerboard: v =
  side^2 / 12 (uniform on a square), giving sqrt(1/3) ~= 0.5774 (each
  coordinate's marginal is uniform on [-1, 1]).
  """
  centers = mode_centers(name)
  within = GMM8_STD ** 2 if name == "gmm8" else CHECKER_SIDE ** 2 / 12.0
  spread = np.mean(np.sum((centers - centers.mean(axis=0)) ** 2, axis=1)) / 2.0
  return float(np.sqrt(spread + within))


def sample_toy2d(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
  """n i.i.d. exact samples of distribution `name`: (n, 2) float32."""
  check_toy2d_name(name)
  k = rng.integers(0, 8, size=n)
  if name == "gmm8":
    x = GMM8_MEANS[k] + GMM8_STD * rng.standard_normal((n, 2))
  else:
    x = CHECKER_CENTERS[k] + rng.uniform(-CHECKER_SIDE / 2, CHECKER_SIDE / 2, size=(n, 2))
  return x.astype(np.float32)


class Toy2DSource:
  """Fresh exact samples of a toy distribution, as a pure function of the step.

  The global batch of step s is `sample_toy2d(name, global_batch,
  default_rng([seed, s]))`; each process takes its contiguous slice of it, so a
  resumed run reads exactly the batch it would have read, and any split over
  processes sees the same global data.

  Attributes:
    name, global_batch, seed, local_batch: as given / global_batch // process_count.
    image_shape: (2,), the shape of one example. num_classes: 0 (no labels).
    steps_per_epoch: 0 (every step draws fresh samples; there are no epochs).
    prefetch: batches `iterate` makes ahead in a background thread.
  """

  image_shape = (2,)
  num_classes = 0
  with_labels = False
  steps_per_epoch = 0

  def __init__(self, name: str, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1, prefetch: int = 0):
    check_toy2d_name(name)
    if global_batch % process_count:
      raise ValueError(f"batch size {global_batch} is not divisible by the process count {process_count}")
    self.name = name
    self.global_batch = global_batch
    self.seed = seed
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self.prefetch = prefetch

  def batch(self, step: int) -> dict:
    """{'image': (local_batch, 2) float32} of global step `step`."""
    rng = np.random.default_rng([self.seed, int(step)])
    x = sample_toy2d(self.name, self.global_batch, rng)
    return {"image": x[self.offset:self.offset + self.local_batch]}

  def iterate(self, start_step: int = 0):
    """batch(start_step), batch(start_step + 1), ... made `prefetch` ahead; close() it when done."""
    return iterate_batches(self.batch, start_step, self.prefetch)
