"""The exact probability flow of an isotropic Gaussian mixture, and its consistency function.

Data x0 ~ sum_k pi_k N(mu_k, s^2 I). Noised as in EDM / the CM paper, x_t = x0 + t z, the
marginal is p_t = sum_k pi_k N(mu_k, (s^2 + t^2) I), so everything is closed form:
  score      grad log p_t(x) = sum_k w_k(x, t) (mu_k - x) / (s^2 + t^2),
             w_k = softmax_k(log pi_k - ||x - mu_k||^2 / (2 (s^2 + t^2)))   (log-sum-exp stable),
  denoiser   D(x, t) = E[x0 | x_t = x] = x + t^2 score(x, t)                  (Tweedie),
  PF-ODE     dx/dt = -t score(x, t) = (x - D(x, t)) / t                       (EDM Eq. 4, VE),
  f*(x, t)   the end point at t_end = eps of the PF-ODE started at (x, t): the TRUE consistency
             function a consistency model f_theta(x, t) should learn.
The ODE is integrated in float64 (numpy) with classical RK4 in u = ln t, where the flow is
smooth over t in [0.002, 80] (dx/du = -t^2 score). TrigFlow models (sCT/sCD) live on the same
trajectories: x_trig = cos(t') x_sigma with sigma = sd tan(t') (`trigflow_to_sigma`).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.data.toy2d import GMM8_MEANS, GMM8_STD


@dataclasses.dataclass(frozen=True)
class GaussianMixture:
  """means (K, D), std s (isotropic, shared), weights (K,) summing to 1 (uniform if None)."""
  means: np.ndarray
  std: float
  weights: np.ndarray | None = None

  def _w(self) -> np.ndarray:
    k = len(self.means)
    return np.full(k, 1.0 / k) if self.weights is None else np.asarray(self.weights, np.float64)

  def _logits(self, x: np.ndarray, t) -> tuple[np.ndarray, np.ndarray]:
    """(log pi_k + log N_k(x) up to the shared constant (N, K), var (N, 1))."""
    x = np.asarray(x, np.float64)
    var = self.std**2 + np.asarray(t, np.float64).reshape(-1, 1) ** 2
    sq = np.sum((x[:, None, :] - np.asarray(self.means)[None]) ** 2, axis=-1)   # (N, K)
    return np.log(self._w())[None] - sq / (2 * var), var

  def log_density(self, x: np.ndarray, t) -> np.ndarray:
    """log p_t(x) for x (N, D) and t scalar or (N,) -> (N,) (float64)."""
    logits, var = self._logits(x, t)
    d = np.asarray(x).shape[-1]
    m = logits.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.sum(np.exp(logits - m), axis=1))
    return lse - 0.5 * d * np.log(2 * np.pi * var[:, 0])

  def denoiser(self, x: np.ndarray, t) -> np.ndarray:
    """D(x, t) = E[x0 | x_t = x] = sum_k w_k (x s^2 + mu_k t^2) / (s^2 + t^2): (N, D) float64."""
    logits, var = self._logits(x, t)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    t2 = np.asarray(t, np.float64).reshape(-1, 1) ** 2
    post_mean = w @ np.asarray(self.means)                                     # (N, D)
    return (np.asarray(x, np.float64) * self.std**2 + post_mean * t2) / var

  def score(self, x: np.ndarray, t) -> np.ndarray:
    """grad_x log p_t(x) = (D(x, t) - x) / t^2 ... computed as sum_k w_k (mu_k - x)/(s^2 + t^2)."""
    logits, var = self._logits(x, t)
    w = np.exp(logits - logits.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    return (w @ np.asarray(self.means) - np.asarray(x, np.float64)) / var

  def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of the mixture (float64)."""
    k = rng.choice(len(self.means), size=n, p=self._w())
    return np.asarray(self.means)[k] + self.std * rng.standard_normal((n, np.asarray(self.means).shape[1]))


def pf_ode(gmm: GaussianMixture, x: np.ndarray, t_from, t_to: float = 0.002, steps: int = 256,
           return_path: bool = False):
  """Integrates dx/dt = -t score(x, t) from t_from (scalar or (N,)) down to t_to with RK4 in ln t.

  Args:
    x: (N, D) start points at noise level t_from.
    steps: RK4 steps (each 4 exact score evaluations); 256 agree with 1,024 to 1e-5 on the
      8-Gaussian mixture from t = 80 and with the closed form of one Gaussian to 1e-7 (tested).
    return_path: also return the (steps + 1, N, D) path and its (steps + 1, N) noise levels.
  Returns:
    (N, D) float64 end points f*(x, t_from) (and the path if asked).
  """
  x = np.array(x, np.float64)
  n = x.shape[0]
  u0 = np.log(np.broadcast_to(np.asarray(t_from, np.float64), (n,)))
  h = (np.log(t_to) - u0) / steps                                               # (N,), < 0

  def vel(xx, u):  # dx/du = t dx/dt = -t^2 score
    t = np.exp(u)
    return -(t**2)[:, None] * gmm.score(xx, t)

  path, ts = [x.copy()], [np.exp(u0)]
  u = u0.copy()
  for _ in range(steps):
    k1 = vel(x, u)
    k2 = vel(x + 0.5 * h[:, None] * k1, u + 0.5 * h)
    k3 = vel(x + 0.5 * h[:, None] * k2, u + 0.5 * h)
    k4 = vel(x + h[:, None] * k3, u + h)
    x = x + h[:, None] / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    u = u + h
    if return_path:
      path.append(x.copy())
      ts.append(np.exp(u))
  if return_path:
    return x, np.stack(path), np.stack(ts)
  return x


def consistency_function(gmm: GaussianMixture, x: np.ndarray, t, t_end: float = 0.002,
                         steps: int = 256) -> np.ndarray:
  """f*(x, t): the PF-ODE end point at t_end (the CM boundary eps) from (x, t); (N, D) float64."""
  return pf_ode(gmm, x, t, t_end, steps)


def trigflow_to_sigma(x_trig: np.ndarray, t_trig, sigma_data: float):
  """TrigFlow state (x = cos t x0 + sin t z, z ~ N(0, sd^2)) -> the EDM state on the same PF-ODE
  trajectory: (x / cos t, sigma = sd tan t)."""
  t_trig = np.asarray(t_trig, np.float64)
  return np.asarray(x_trig, np.float64) / np.cos(t_trig).reshape(-1, 1), sigma_data * np.tan(t_trig)


def gmm8() -> GaussianMixture:
  """The 'toy2d_gmm8' data distribution (cmjax.data.toy2d)."""
  return GaussianMixture(np.asarray(GMM8_MEANS, np.float64), float(GMM8_STD))


def jax_denoiser(gmm: GaussianMixture):
  """The exact denoiser as a jit-able teacher fn(params, x (B, D), s (B,)) -> (B, D) (float32;
  params unused): the 'exact teacher' of CD-exact (`cd.exact_teacher`)."""
  means = jnp.asarray(gmm.means, jnp.float32)
  logw = jnp.log(jnp.asarray(gmm._w(), jnp.float32))
  s2 = float(gmm.std) ** 2

  def fn(params, x, s):
    del params
    var = s2 + s[:, None] ** 2                                                  # (B, 1)
    logits = logw[None] - jnp.sum((x[:, None, :] - means[None]) ** 2, -1) / (2 * var)
    w = jax.nn.softmax(logits, axis=-1)
    return (x * s2 + (w @ means) * s[:, None] ** 2) / var

  return fn
