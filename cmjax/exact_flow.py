"""The exact flow of a Gaussian mixture on the linear path z_t = (1 - t) x + t e (flow matching,
rectified flow, MeanFlow, shortcut models), from the EDM-time mixture of `cmjax.exact_gmm`.

With x ~ sum_k pi_k N(mu_k, s^2 I) and e ~ N(0, I), z_t = (1 - t) x_sigma with x_sigma = x + sigma e,
sigma = t / (1 - t); so z_t | k ~ N((1 - t) mu_k, ((1 - t)^2 s^2 + t^2) I) and
  velocity      v*(z, t) = E[e - x | z_t = z] = (z - D(z / (1 - t), t / (1 - t))) / t,   t in (0, 1),
                v*(z, 1) = z - E[x],  v*(z, t -> 0) = -E[x | x_0 = z]... (t = 0 excluded),
  flow ODE      dz/dt = v*(z, t) (float64, classical RK4 in t),
  average       u*(z, r, t) = (z - z_r) / (t - r), z_r the exact ODE from (z, t) to r (MeanFlow's
                average velocity; MeanFlow Eq. 3), u*(z, t, t) = v*(z, t),
  shortcut      s*(z, t, d) = u*(z, t - d, t): the step of size d from t towards the data, as a
                velocity (shortcut models, with time reversed to this file's t = 1 noise convention).
"""
from __future__ import annotations

import numpy as np

from cmjax.exact_gmm import GaussianMixture


def velocity(gmm: GaussianMixture, z: np.ndarray, t) -> np.ndarray:
  """v*(z, t) for z (N, D), t scalar or (N,) in (0, 1] -> (N, D) float64."""
  z = np.asarray(z, np.float64)
  t = np.broadcast_to(np.asarray(t, np.float64), z.shape[:1]).reshape(-1, 1)
  out = np.empty_like(z)
  one = t[:, 0] >= 1.0
  mean = np.sum(gmm._w()[:, None] * np.asarray(gmm.means, np.float64), axis=0)
  out[one] = z[one] - mean
  rest = ~one
  if np.any(rest):
    tr = t[rest]
    d = gmm.denoiser(z[rest] / (1.0 - tr), (tr / (1.0 - tr))[:, 0])
    out[rest] = (z[rest] - d) / tr
  return out


def flow_ode(gmm: GaussianMixture, z: np.ndarray, t_from, t_to, steps: int = 128) -> np.ndarray:
  """z at t_to of dz/dt = v*(z, t) from (z, t_from), per example (t_from, t_to scalars or (N,);
  t_to may be 0 when t_from > 0), by `steps` classical RK4 steps uniform in t. Returns (N, D)."""
  z = np.asarray(z, np.float64).copy()
  a = np.broadcast_to(np.asarray(t_from, np.float64), z.shape[:1])
  b = np.broadcast_to(np.asarray(t_to, np.float64), z.shape[:1])
  h = (b - a) / steps
  eps = 1e-9  # v* at t = 0 is the limit (z - D(z, 0)) / 0 = -score-free; stay just above it
  for i in range(steps):
    t = a + i * h
    hh = h[:, None]
    k1 = velocity(gmm, z, np.maximum(t, eps))
    k2 = velocity(gmm, z + 0.5 * hh * k1, np.maximum(t + 0.5 * h, eps))
    k3 = velocity(gmm, z + 0.5 * hh * k2, np.maximum(t + 0.5 * h, eps))
    k4 = velocity(gmm, z + hh * k3, np.maximum(t + h, eps))
    z = z + hh / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
  return z


def average_velocity(gmm: GaussianMixture, z: np.ndarray, r, t, steps: int = 128) -> np.ndarray:
  """u*(z, r, t) = (z - z_r) / (t - r) along the exact trajectory through z at time t (r < t);
  v*(z, t) where r == t. z (N, D); r, t scalars or (N,). Returns (N, D) float64."""
  z = np.asarray(z, np.float64)
  r = np.broadcast_to(np.asarray(r, np.float64), z.shape[:1])
  t = np.broadcast_to(np.asarray(t, np.float64), z.shape[:1])
  same = np.isclose(r, t)
  out = np.empty_like(z)
  if np.any(same):
    out[same] = velocity(gmm, z[same], t[same])
  if np.any(~same):
    zr = flow_ode(gmm, z[~same], t[~same], r[~same], steps)
    out[~same] = (z[~same] - zr) / (t[~same] - r[~same])[:, None]
  return out


def shortcut(gmm: GaussianMixture, z: np.ndarray, t, d, steps: int = 128) -> np.ndarray:
  """s*(z, t, d) = u*(z, t - d, t): the exact shortcut of step d from time t (d <= t)."""
  return average_velocity(gmm, z, np.asarray(t) - np.asarray(d), t, steps)


def noised(gmm: GaussianMixture, n: int, t, rng: np.random.Generator) -> np.ndarray:
  """n samples of z_t = (1 - t) x + t e (t scalar or (n,)), float64 (n, D)."""
  t = np.broadcast_to(np.asarray(t, np.float64), (n,)).reshape(-1, 1)
  x = gmm.sample(n, rng)
  return (1 - t) * x + t * rng.standard_normal(x.shape)
