"""Fréchet distance between Gaussians fitted to feature sets (as in FID).

Heusel et al. 2017 ("GANs trained by a two time-scale update rule converge to a
local Nash equilibrium") score samples by fitting a Gaussian N(mu, Sigma) to the
features of each image set and taking the Fréchet (2-Wasserstein) distance

  d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}).

We use numpy only (no scipy): since S1^{1/2} S2 S1^{1/2} is symmetric PSD and
similar to S1 S2, Tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i(S1^{1/2} S2 S1^{1/2})),
computed with two symmetric eigendecompositions in float64. Negative
eigenvalues from round-off (near-singular covariances, e.g. dead ReLU units)
are clipped to 0, so no complex parts or NaNs arise.
"""
from __future__ import annotations

import numpy as np


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and unbiased covariance of a feature set.

  Args:
    features: (N, F) array, N >= 2.

  Returns:
    (mu (F,), sigma (F, F)), float64; sigma as `np.cov(features, rowvar=False)`.
  """
  features = np.asarray(features, dtype=np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"feature_statistics expects (N >= 2, F) features, got {features.shape}")
  mu = features.mean(axis=0)
  sigma = np.cov(features, rowvar=False)
  return mu, np.atleast_2d(sigma)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  """Symmetric square root of a (numerically) PSD matrix, eigenvalues clipped at 0."""
  w, v = np.linalg.eigh((s + s.T) / 2.0)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

  ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr (S1 S2)^{1/2}, in float64.

  Args:
    mu1, mu2: means, shape (F,).
    sigma1, sigma2: covariances, shape (F, F).

  Returns:
    The squared Fréchet distance as a python float (>= 0 up to round-off; it is
    clipped at 0).
  """
  mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
  s1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
  s2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
  f = mu1.shape[0]
  if mu2.shape != (f,) or s1.shape != (f, f) or s2.shape != (f, f):
    raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, "
                     f"mu2 {mu2.shape}, sigma2 {s2.shape}")
  sqrt_s1 = _sqrt_psd(s1)
  m = sqrt_s1 @ s2 @ sqrt_s1
  eig = np.linalg.eigvalsh((m + m.T) / 2.0)
  tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
  diff = mu1 - mu2
  d = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean
  return float(max(d, 0.0))
