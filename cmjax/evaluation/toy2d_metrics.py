"""Exact metrics and a PIL scatter plot for the 2-D toy distributions (cmjax.data.toy2d).

sliced_wasserstein: the sliced Wasserstein-1 distance (Rabin et al. 2011;
Bonneel et al. 2015) SW1(P, Q) = E_theta W1(theta.P, theta.Q) over unit
directions theta, estimated with a fixed set of random directions; each 1-D W1
is computed exactly from the empirical quantile functions,
W1 = int_0^1 |F^-1(u) - G^-1(u)| du.

modes_covered / fraction_near_modes: mode coverage and sample quality against
the known mode centres. A sample belongs to its nearest mode if it lies within
`radius` of it: Euclidean distance for 'gmm8' (default 4 std = 0.2), Chebyshev
(max-coordinate) distance for 'checkerboard' (default half a side = 0.25, i.e.
inside the black square).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw

from cmjax.data.toy2d import CHECKER_SIDE, GMM8_STD, mode_centers, sample_toy2d

_EVAL_SALT = 0x70D2E7A1  # keeps reference samples independent of training's default_rng([seed, step])


def _quantile_w1(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
  """Exact W1 between empirical 1-D distributions, column-wise: (n, P), (m, P) -> (P,)."""
  sa, sb = np.sort(pa, axis=0), np.sort(pb, axis=0)
  n, m = len(sa), len(sb)
  if n == m:
    return np.mean(np.abs(sa - sb), axis=0)
  # Both quantile functions are constant between consecutive points of the grid
  # {i/n} U {j/m}; integrate exactly at the midpoints of that grid.
  grid = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
  mid, width = (grid[1:] + grid[:-1]) / 2, np.diff(grid)
  ia = np.minimum((mid * n).astype(np.int64), n - 1)
  ib = np.minimum((mid * m).astype(np.int64), m - 1)
  return width @ np.abs(sa[ia] - sb[ib])


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 512,
                       seed: int = 0) -> float:
  """Sliced Wasserstein-1 distance between point clouds a (n, D) and b (m, D).

  Uses `num_projections` unit directions drawn (Gaussian, normalised) from
  default_rng(seed), the same for every call with that seed, so scores are
  comparable across runs. For each direction, the W1 distance between the
  projections is exact: by sorting when n == m, otherwise on the common
  quantile grid {i/n} U {j/m}. A pure shift b = a + v gives exactly |v| times
  the mean |cos(theta, v)| over the directions (-> 2|v|/pi in 2-D).

  Returns:
    The mean over directions, a float in the units of the data.
  """
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = np.asarray(b, np.float64).reshape(len(b), -1)
  if a.shape[1] != b.shape[1] or not len(a) or not len(b):
    raise ValueError(f"sliced_wasserstein needs non-empty clouds of equal dimension, "
                     f"got {a.shape} and {b.shape}")
  theta = np.random.default_rng(seed).standard_normal((num_projections, a.shape[1]))
  theta /= np.linalg.norm(theta, axis=1, keepdims=True)
  chunk = max(1, 2 ** 22 // (len(a) + len(b)))  # bounds memory to ~ 4M doubles per chunk
  w = [_quantile_w1(a @ t.T, b @ t.T) for t in np.split(theta, range(chunk, num_projections, chunk))]
  return float(np.mean(np.concatenate(w)))


def _assign(samples: np.ndarray, name: str, radius: float | None) -> np.ndarray:
  """(n,) index of each sample's mode, or -1 when it is farther than `radius` from every mode."""
  centers = mode_centers(name)
  diff = np.asarray(samples, np.float64).reshape(-1, 1, 2) - centers[None]
  if name == "gmm8":
    dist = np.linalg.norm(diff, axis=-1)
    radius = 4.0 * GMM8_STD if radius is None else radius
  else:
    dist = np.max(np.abs(diff), axis=-1)
    radius = CHECKER_SIDE / 2 if radius is None else radius
  nearest = np.argmin(dist, axis=1)
  inside = dist[np.arange(len(dist)), nearest] <= radius
  return np.where(inside, nearest, -1)


def modes_covered(samples: np.ndarray, name: str, radius: float | None = None,
                  min_fraction: float = 0.25) -> float:
  """Fraction of the M = 8 modes covered by samples (n, 2).

  Each sample is assigned to its nearest mode if within `radius` (see module
  docstring for the defaults); a mode is covered when it received at least
  `min_fraction` * n / M samples (its expected share is n / M).
  """
  idx = _assign(samples, name, radius)
  m = len(mode_centers(name))
  counts = np.bincount(idx[idx >= 0], minlength=m)
  return float(np.mean(counts >= min_fraction * len(idx) / m))


def fraction_near_modes(samples: np.ndarray, name: str, radius: float | None = None) -> float:
  """Share of samples (n, 2) that lie within `radius` of some mode (1.0 minus the outliers)."""
  return float(np.mean(_assign(samples, name, radius) >= 0))


def toy2d_metrics(samples: np.ndarray, name: str, num_reference: int = 10_000,
                  seed: int = 0) -> dict:
  """{'swd', 'modes_covered', 'near_modes'} of samples (n, 2) of toy distribution `name`.

  'swd' is sliced_wasserstein against `num_reference` fresh exact samples drawn
  from SeedSequence(seed, spawn_key=(salt,)), a stream disjoint from the
  training batches' default_rng([seed, step]).
  """
  samples = np.asarray(samples, np.float64).reshape(len(samples), 2)
  rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_EVAL_SALT,)))
  reference = sample_toy2d(name, num_reference, rng)
  return {"swd": sliced_wasserstein(samples, reference, seed=seed),
          "modes_covered": modes_covered(samples, name),
          "near_modes": fraction_near_modes(samples, name)}


def save_scatter_png(samples: np.ndarray, path: str, reference: np.ndarray | None = None,
                     size: int = 512, extent: float = 1.6) -> None:
  """Writes a size x size PNG scatter plot of samples (n, 2) over [-extent, extent]^2.

  White background, light axis lines through 0, a black box around the plot,
  grey `reference` points (m, 2) if given, and dark 2x2-pixel sample points
  drawn on top. Points outside the extent are dropped. Creates parent dirs.
  """
  img = np.full((size, size, 3), 255, np.uint8)
  img[size // 2, :] = img[:, size // 2] = 225

  def plot(points, color):
    p = np.asarray(points, np.float64).reshape(-1, 2)
    p = p[np.all(np.isfinite(p), axis=1)]
    col = np.floor((p[:, 0] + extent) / (2 * extent) * (size - 1)).astype(np.int64)
    row = np.floor((extent - p[:, 1]) / (2 * extent) * (size - 1)).astype(np.int64)
    keep = (col >= 0) & (col < size - 1) & (row >= 0) & (row < size - 1)
    for dr in (0, 1):
      for dc in (0, 1):
        img[row[keep] + dr, col[keep] + dc] = color

  if reference is not None:
    plot(reference, (170, 170, 170))
  plot(samples, (20, 40, 110))
  image = Image.fromarray(img)
  ImageDraw.Draw(image).rectangle([0, 0, size - 1, size - 1], outline=(0, 0, 0))
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  image.save(path)
