"""digits-FD: our offline stand-in for FID on the 8x8 digits.

Like FID, but the features are the 128-d penultimate (post-ReLU) activations of
the small shipped `DigitsClassifier` instead of Inception-v3 pool features, and
the reference is a split of the embedded digits data. Lower is better; 0 means
the two feature Gaussians coincide. Because both statistics are estimated from
finite samples, even real held-out digits do not reach 0: `digits_fd_data_floor()`
(held-out vs train) is the real-vs-real floor a perfect generator would score
around (with a comparable sample size, ~360 images). Values depend on N (FD is
biased upwards for small N), so compare scores computed with the same N.
"""
from __future__ import annotations

import functools

import numpy as np

from cmjax.data.digits import load_digits_split
from cmjax.evaluation.digits_classifier import digits_features
from cmjax.evaluation.frechet import feature_statistics, frechet_distance


@functools.lru_cache(maxsize=None)
def reference_statistics(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
  """Feature statistics of the real digits of `split` (cached, read-only).

  Returns:
    (mu (FEATURE_DIM,), sigma (FEATURE_DIM, FEATURE_DIM)), float64.
  """
  mu, sigma = feature_statistics(digits_features(load_digits_split(split)))
  mu.setflags(write=False)
  sigma.setflags(write=False)
  return mu, sigma


def digits_fd(images: np.ndarray, reference: str = "train") -> float:
  """Fréchet distance between `images` and real digits in classifier feature space.

  Args:
    images: (N, 8, 8, 1), N >= 2, nominally in [-1, 1]. Values outside are
      clipped to [-1, 1] first (as samples are before display), so out-of-range
      pixels are not penalised beyond the range edge.
    reference: digits split for the reference statistics ('train', 'heldout'
      or 'all').

  Returns:
    The FD (float >= 0); see `digits_fd_data_floor()` for the real-data floor.
  """
  images = np.asarray(images, dtype=np.float32)
  if images.ndim != 4 or images.shape[1:] != (8, 8, 1):
    raise ValueError(f"digits-FD expects images of shape (N, 8, 8, 1), got {images.shape}")
  if images.shape[0] < 2:
    raise ValueError(f"digits-FD needs N >= 2 images for a covariance, got N={images.shape[0]}")
  mu, sigma = feature_statistics(digits_features(np.clip(images, -1.0, 1.0)))
  mu_ref, sigma_ref = reference_statistics(reference)
  return frechet_distance(mu, sigma, mu_ref, sigma_ref)


@functools.lru_cache(maxsize=1)
def digits_fd_data_floor() -> float:
  """FD of the 360 real held-out digits vs the train statistics (real-vs-real floor)."""
  return digits_fd(load_digits_split("heldout"), reference="train")
