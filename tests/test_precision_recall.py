"""cmjax.evaluation.precision_recall: hand-checked cases of Kynkäänniemi et al. 2019 (Eqs. 1-3).

The 1-D examples use small integer coordinates, so float32 distances are exact and points lying exactly
on a hypersphere test the paper's "<=".
"""
from __future__ import annotations

import numpy as np
import pytest

from cmjax.evaluation.precision_recall import knn_radii, manifold_membership, precision_recall


def _col(*xs) -> np.ndarray:
  return np.asarray(xs, np.float32)[:, None]


def _reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
  """Brute force in float64 with explicit differences (no |a|^2 + |b|^2 - 2ab expansion, no chunks)."""
  def dist(a, b):
    return np.sqrt(((a[:, None, :].astype(np.float64) - b[None, :, :]) ** 2).sum(-1))

  def radii(x):
    d = dist(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]

  return {"precision": float(np.mean((dist(fake, real) <= radii(real)[None]).any(1))),
          "recall": float(np.mean((dist(real, fake) <= radii(fake)[None]).any(1)))}


def test_knn_radii_by_hand_and_chunked():
  real = _col(0, 1, 2, 3, 4, 5, 6, 7)
  # k=3: the end points' 3rd nearest others are at distance 3; inner points have two at 1, two at 2.
  np.testing.assert_array_equal(knn_radii(real, k=3), [3, 2, 2, 2, 2, 2, 2, 3])
  np.testing.assert_array_equal(knn_radii(real, k=1), np.ones(8))
  # chunk=3: blocks start at rows 0, 3, 6 (the last one padded); self-exclusion must use the offset
  np.testing.assert_array_equal(knn_radii(real, k=3, chunk=3), [3, 2, 2, 2, 2, 2, 2, 3])
  np.testing.assert_array_equal(knn_radii(_col(5, 5, 5, 5, 9), k=3), [0, 0, 0, 0, 4])  # duplicates count


def test_identical_sets():
  x = np.random.default_rng(0).normal(size=(20, 2)).astype(np.float32)
  assert precision_recall(x, x.copy(), k=3) == {"precision": 1.0, "recall": 1.0}


def test_far_away_fake_set():
  real = np.random.default_rng(1).normal(size=(20, 2)).astype(np.float32)
  assert precision_recall(real, real + 1000.0, k=3) == {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_onto_one_real_point():
  """All 5 fakes sit on real point 3 of {0, ..., 7}: every fake is inside (distance 0 <= radius 2), so
  precision = 1; the fake radii are 0 (each fake's 3rd nearest other fake is a duplicate), so only the real
  point at 3 itself is covered: recall = 1/8."""
  real = _col(0, 1, 2, 3, 4, 5, 6, 7)
  fake = _col(3, 3, 3, 3, 3)
  np.testing.assert_array_equal(knn_radii(fake, k=3), np.zeros(5))
  assert precision_recall(real, fake, k=3) == {"precision": 1.0, "recall": 1.0 / 8}


def test_k_changes_the_result():
  """real {0, 1, 2, 3, 4}, fake {6, 10, 11, 12, 13}.

  k=1: real radii all 1 -> no fake within 1 of a real point: precision 0. Fake radii: 6 -> 4 (to 10),
       10..13 -> 1. Reals 4, 3, 2 are within 4 of fake 6 (2 exactly on the sphere), 1 and 0 are not:
       recall 3/5.
  k=3: real radii (3, 2, 2, 2, 3): fake 6 is within 3 of real 4, 10..13 are >= 6 from every real point:
       precision 1/5. Fake 6's radius is 6 (its 3rd nearest other fake is 12), covering 0..4 (0 exactly on
       the sphere): recall 1.
  """
  real, fake = _col(0, 1, 2, 3, 4), _col(6, 10, 11, 12, 13)
  np.testing.assert_array_equal(knn_radii(fake, k=1), [4, 1, 1, 1, 1])
  np.testing.assert_array_equal(knn_radii(fake, k=3), [6, 3, 2, 2, 3])
  assert precision_recall(real, fake, k=1) == {"precision": 0.0, "recall": 3 / 5}
  assert precision_recall(real, fake, k=3) == {"precision": 1 / 5, "recall": 1.0}
  # the memberships behind those numbers (k=1 recall): boundary point 2 is inside, 1 is not
  np.testing.assert_array_equal(manifold_membership(real, fake, knn_radii(fake, k=1)),
                                [False, False, True, True, True])


def test_chunking_matches_unchunked_and_brute_force():
  rng = np.random.default_rng(2)
  real = rng.normal(size=(37, 5)).astype(np.float32)
  fake = (rng.normal(size=(29, 5)) * 1.3 + 0.7).astype(np.float32)
  whole = precision_recall(real, fake, k=3, chunk=1000)
  assert 0.0 < whole["precision"] < 1.0 and 0.0 < whole["recall"] < 1.0  # a non-trivial case
  for chunk in (1, 7, 29, 37):
    assert precision_recall(real, fake, k=3, chunk=chunk) == whole, chunk
  assert whole == _reference(real, fake, k=3)
  assert precision_recall(real, fake, k=5, chunk=8) == _reference(real, fake, k=5)
  np.testing.assert_allclose(knn_radii(real, k=3, chunk=4), knn_radii(real, k=3), rtol=0, atol=0)


def test_bad_inputs_give_one_line_errors():
  real, fake = np.zeros((10, 4), np.float32), np.ones((10, 3), np.float32)
  cases = [
      ((real, fake), {}, "feature dims differ"),
      ((real[:3], real), {}, "real set has 3 points; the k-NN radius needs more than k = 3"),
      ((real, real[:2]), {"k": 2}, "fake set has 2 points; the k-NN radius needs more than k = 2"),
      ((real, real), {"k": 0}, "k must be a positive int, got 0"),
      ((real, real), {"chunk": 0}, "chunk must be a positive int"),
      ((real[0], real), {}, r"non-empty \(N, F\) array, got shape \(4,\)"),
      ((np.full((10, 4), np.nan), real), {}, "NaN or inf"),
  ]
  for args, kwargs, msg in cases:
    with pytest.raises(ValueError, match=msg) as e:
      precision_recall(*args, **kwargs)
    assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"radii must have shape \(10,\)"):
    manifold_membership(fake[:, :3], np.ones((10, 3)), np.ones(9))
