"""Tests for the Fréchet distance, the shipped digits classifier and digits-FD."""
from __future__ import annotations

import numpy as np
import pytest

from cmjax.data.digits import load_digits_split
from cmjax.evaluation import (digits_fd, digits_fd_data_floor, digits_features,
                              feature_statistics, frechet_distance)
from cmjax.evaluation import digits_classifier as dc


def _random_cov(rng: np.random.Generator, f: int) -> np.ndarray:
  a = rng.normal(size=(f, f))
  return a @ a.T / f + 0.1 * np.eye(f)


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_identical_is_zero():
  rng = np.random.default_rng(0)
  mu, sigma = rng.normal(size=16), _random_cov(rng, 16)
  assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_symmetric():
  rng = np.random.default_rng(1)
  mu1, s1, mu2, s2 = rng.normal(size=8), _random_cov(rng, 8), rng.normal(size=8), _random_cov(rng, 8)
  d12 = frechet_distance(mu1, s1, mu2, s2)
  assert d12 > 0.1
  assert d12 == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_frechet_1d_closed_form():
  m1, s1, m2, s2 = 0.3, 1.7, -1.2, 0.4  # s = standard deviations
  expected = (m1 - m2) ** 2 + (s1 - s2) ** 2
  got = frechet_distance(np.array([m1]), np.array([[s1 ** 2]]), np.array([m2]), np.array([[s2 ** 2]]))
  assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_diagonal_and_rotated_closed_form():
  rng = np.random.default_rng(2)
  f = 6
  mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
  d1, d2 = rng.uniform(0.1, 3.0, f), rng.uniform(0.1, 3.0, f)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
  assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-10)
  # FD is invariant under a common rotation of both Gaussians.
  q, _ = np.linalg.qr(rng.normal(size=(f, f)))
  got = frechet_distance(q @ mu1, q @ np.diag(d1) @ q.T, q @ mu2, q @ np.diag(d2) @ q.T)
  assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_matches_scipy_sqrtm():
  linalg = pytest.importorskip("scipy.linalg")
  rng = np.random.default_rng(3)
  mu1, s1, mu2, s2 = rng.normal(size=10), _random_cov(rng, 10), rng.normal(size=10), _random_cov(rng, 10)
  covmean = linalg.sqrtm(s1 @ s2).real
  expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * covmean)
  assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_singular_covariances_are_finite():
  rng = np.random.default_rng(4)
  x = rng.normal(size=(5, 20))  # N < F: rank-deficient covariance
  mu1, s1 = feature_statistics(x)
  mu2, s2 = feature_statistics(x + 0.5)
  d = frechet_distance(mu1, s1, mu2, s2)
  assert np.isfinite(d) and d == pytest.approx(20 * 0.25, rel=1e-6)
  assert frechet_distance(mu1, s1, mu1, s1) < 1e-6


def test_feature_statistics_matches_numpy():
  x = np.random.default_rng(5).normal(size=(50, 4)).astype(np.float32)
  mu, sigma = feature_statistics(x)
  assert mu.dtype == np.float64 and sigma.shape == (4, 4)
  np.testing.assert_allclose(mu, x.astype(np.float64).mean(0))
  np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False))


# ---------------------------------------------------------------- classifier


def test_shipped_weights_heldout_accuracy():
  params = dc.load_classifier_params()
  n_params = sum(np.size(v) for layer in params.values() for v in layer.values())
  assert n_params < 200_000
  x, y = load_digits_split("heldout", with_labels=True)
  logits = np.asarray(dc.DigitsClassifier().apply({"params": params}, x))
  assert logits.shape == (360, dc.NUM_CLASSES)
  assert (logits.argmax(-1) == y).mean() >= 0.95


def test_params_roundtrip_and_missing_file(tmp_path):
  params = dc.load_classifier_params()
  path = tmp_path / "w.npz"
  dc.save_classifier_params(params, path)
  again = dc.load_classifier_params(path)
  assert again.keys() == params.keys()
  for layer in params:
    for k in params[layer]:
      np.testing.assert_array_equal(again[layer][k], params[layer][k])
  missing = tmp_path / "nope.npz"
  with pytest.raises(FileNotFoundError, match="nope.npz"):
    dc.load_classifier_params(missing)


def test_features_shape_and_batching():
  x = load_digits_split("heldout")[:37]
  f_all = digits_features(x)
  assert f_all.shape == (37, dc.FEATURE_DIM)
  assert (f_all >= 0).all()  # post-ReLU
  np.testing.assert_allclose(digits_features(x, batch_size=10), f_all, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 28, 28, 1), (4, 8, 8, 3), (8, 8, 1)])
def test_wrong_shape_raises(shape):
  images = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\)"):
    digits_features(images)
  with pytest.raises(ValueError, match=r"\(N, 8, 8, 1\)"):
    digits_fd(images)


# ---------------------------------------------------------------- digits-FD


def test_digits_fd_self_and_floor():
  train = load_digits_split("train")
  assert digits_fd(train) < 1e-6
  floor = digits_fd_data_floor()
  assert 0.0 < floor < 50.0


def test_digits_fd_clips_out_of_range():
  x = load_digits_split("heldout")
  assert digits_fd(x * 3.0) == pytest.approx(digits_fd(np.clip(x * 3.0, -1, 1)), rel=1e-9)


def test_digits_fd_bad_samples_far_above_floor():
  floor = digits_fd_data_floor()
  rng = np.random.default_rng(0)
  train = load_digits_split("train")[:360]
  noise = rng.uniform(-1.0, 1.0, (360, 8, 8, 1)).astype(np.float32)
  black = -np.ones((360, 8, 8, 1), np.float32)
  perm = rng.permutation(64)
  shuffled = train.reshape(360, 64)[:, perm].reshape(360, 8, 8, 1)
  padded = np.pad(train, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  blurred = sum(padded[:, i:i + 8, j:j + 8] for i in range(3) for j in range(3)) / 9.0
  for name, images in [("noise", noise), ("black", black), ("shuffled", shuffled),
                       ("blurred", blurred)]:
    fd = digits_fd(images)
    assert fd > 10 * floor, (name, fd, floor)
