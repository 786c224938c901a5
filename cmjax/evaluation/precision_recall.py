"""Improved precision and recall of generated samples (Kynkäänniemi et al. 2019).

Kynkäänniemi, Karras, Laine, Lehtinen, Aila, "Improved Precision and Recall Metric for Assessing
Generative Models", NeurIPS 2019 (arXiv:1904.06991), Eqs. 1-3. Each feature set Phi approximates its
manifold by the union of hyperspheres centred at its points, radius = distance to the k-th nearest
OTHER point of the same set (NN_k):

  f(phi, Phi) = 1  if ||phi - phi'||_2 <= ||phi' - NN_k(phi', Phi)||_2 for at least one phi' in Phi,
                0  otherwise;                                                                (Eq. 1)
  precision(Phi_r, Phi_g) = 1/|Phi_g| sum_{phi_g in Phi_g} f(phi_g, Phi_r);                (Eq. 2)
  recall(Phi_r, Phi_g)    = 1/|Phi_r| sum_{phi_r in Phi_r} f(phi_r, Phi_g).                (Eq. 3)

k = 3 as in the paper, EDM and ECT; features are usually Inception pool3 (cmjax.evaluation.inception) or
VGG16 fc2 features (the paper's choice). As in the reference implementations (StyleGAN2-ADA / EDM
`metrics/precision_recall.py`), distances are Euclidean in float32, the comparison is "<=" and duplicates
of a point count as neighbours at distance 0.

Memory: distances are computed by blocks of `chunk` rows against a whole set, so a few chunk x max(N, M)
float32 buffers exist at once (1024 x 50k = 200 MB each), never N x M. The blocks are jitted and run on the
default jax backend (a GPU when present).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _sq_dists(a: Array, b: Array, b_sq: Array) -> Array:
  """||a_i - b_j||^2 = |a_i|^2 + |b_j|^2 - 2 a_i.b_j, (c, F) x (N, F) -> (c, N), clipped at 0.

  Full float32 matmul precision (no TF32/bf16 passes on accelerators).
  """
  ab = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
  return jnp.maximum(jnp.sum(a * a, axis=1)[:, None] + b_sq[None, :] - 2.0 * ab, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_block(block: Array, start: Array, feats: Array, feats_sq: Array, k: int) -> Array:
  d2 = _sq_dists(block, feats, feats_sq)
  rows = start + jnp.arange(block.shape[0])
  d2 = jnp.where(rows[:, None] == jnp.arange(feats.shape[0])[None, :], jnp.inf, d2)  # exclude self only
  return -jax.lax.top_k(-d2, k)[0][:, k - 1]


@jax.jit
def _inside_block(block: Array, manifold: Array, manifold_sq: Array, radii_sq: Array) -> Array:
  return jnp.any(_sq_dists(block, manifold, manifold_sq) <= radii_sq[None, :], axis=1)


def _blocks(x: np.ndarray, chunk: int):
  """Yields (start, padded block of exactly `chunk` rows, number of real rows): one compile per shape."""
  for start in range(0, x.shape[0], chunk):
    block = x[start:start + chunk]
    n = block.shape[0]
    if n < chunk and x.shape[0] > chunk:
      block = np.concatenate([block, np.zeros((chunk - n, x.shape[1]), x.dtype)])
    yield start, block, n


def _as_features(x, name: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float32)
  if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"{name} features must be a non-empty (N, F) array, got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name} features contain NaN or inf")
  return x


def _check_positive_int(value, name: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_k_chunk(n: int, k: int, chunk: int, name: str) -> None:
  _check_positive_int(k, "k")
  _check_positive_int(chunk, "chunk")
  if n <= k:
    raise ValueError(f"{name} set has {n} points; the k-NN radius needs more than k = {k}")


def _knn_sq_radii(feats: np.ndarray, k: int, chunk: int) -> np.ndarray:
  f = jnp.asarray(feats)
  f_sq = jnp.sum(f * f, axis=1)
  return np.concatenate([np.asarray(_kth_block(jnp.asarray(b), jnp.int32(s), f, f_sq, int(k)))[:n]
                         for s, b, n in _blocks(feats, int(chunk))])


def _membership(probes: np.ndarray, manifold: np.ndarray, radii_sq: np.ndarray, chunk: int) -> np.ndarray:
  m = jnp.asarray(manifold)
  m_sq, r_sq = jnp.sum(m * m, axis=1), jnp.asarray(radii_sq)
  return np.concatenate([np.asarray(_inside_block(jnp.asarray(b), m, m_sq, r_sq))[:n]
                         for _, b, n in _blocks(probes, int(chunk))])


def knn_radii(features, k: int = 3, chunk: int = 1024) -> np.ndarray:
  """Distance of every point to its k-th nearest OTHER point of the same set, ||phi - NN_k(phi, Phi)||_2.

  Args:
    features: (N, F) with N > k.
    k: neighbourhood size (1 = nearest other point). Duplicates of a point count (distance 0).
    chunk: rows per distance block; peak memory ~ chunk * N float32 values.
  Returns:
    (N,) float32 radii.
  """
  feats = _as_features(features, "knn_radii")
  _check_k_chunk(feats.shape[0], k, chunk, "knn_radii")
  return np.sqrt(_knn_sq_radii(feats, k, chunk))


def manifold_membership(probes, manifold, radii, chunk: int = 1024) -> np.ndarray:
  """f(phi, Phi) of Eq. 1 for every probe: inside at least one hypersphere (centre manifold_j, radius_j)?

  Args:
    probes: (M, F).
    manifold: (N, F), same F.
    radii: (N,) hypersphere radii, e.g. knn_radii(manifold, k); a probe at distance exactly radius_j counts.
    chunk: probe rows per distance block; peak memory ~ chunk * N float32 values.
  Returns:
    (M,) bool.
  """
  probes, manifold = _as_features(probes, "probe"), _as_features(manifold, "manifold")
  radii = np.asarray(radii, np.float32)
  if probes.shape[1] != manifold.shape[1]:
    raise ValueError(f"feature dims differ: probes {probes.shape}, manifold {manifold.shape}")
  if radii.shape != (manifold.shape[0],):
    raise ValueError(f"radii must have shape ({manifold.shape[0]},), got {radii.shape}")
  _check_positive_int(chunk, "chunk")
  return _membership(probes, manifold, np.square(radii), chunk)


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> dict[str, float]:
  """Improved precision and recall (Kynkäänniemi et al. 2019, Eqs. 2-3) of fake w.r.t. real features.

    precision = 1/M sum_j f(fake_j, real),   recall = 1/N sum_i f(real_i, fake),
    f(phi, Phi) = 1[exists phi' in Phi: ||phi - phi'|| <= ||phi' - NN_k(phi', Phi)||].

  Squared distances are compared with squared radii (no square roots), so points exactly on a sphere
  count as inside whenever the float32 arithmetic is exact (e.g. small integer coordinates).

  Args:
    real: (N, F) real-image features, N > k.
    fake: (M, F) generated-image features, M > k (the paper and EDM use N = M = 50k).
    k: neighbourhood size for the hypersphere radii (3 in the paper / EDM / ECT).
    chunk: rows per distance block; peak memory ~ chunk * max(N, M) float32 values.
  Returns:
    {"precision": float in [0, 1], "recall": float in [0, 1]}.
  """
  real, fake = _as_features(real, "real"), _as_features(fake, "fake")
  if real.shape[1] != fake.shape[1]:
    raise ValueError(f"real and fake feature dims differ: {real.shape} vs {fake.shape}")
  _check_k_chunk(real.shape[0], k, chunk, "real")
  _check_k_chunk(fake.shape[0], k, chunk, "fake")
  precision = _membership(fake, real, _knn_sq_radii(real, k, chunk), chunk).mean()
  recall = _membership(real, fake, _knn_sq_radii(fake, k, chunk), chunk).mean()
  return {"precision": float(precision), "recall": float(recall)}
