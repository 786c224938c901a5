"""The exact score, denoiser and PF-ODE of a Gaussian mixture (cmjax.exact_gmm)."""
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.evaluation.toy2d_metrics import toy2d_metrics
from cmjax.exact_gmm import (GaussianMixture, consistency_function, gmm8, jax_denoiser, pf_ode,
                             trigflow_to_sigma)


@pytest.mark.parametrize("t", [0.002, 0.05, 1.0, 80.0])
def test_score_is_the_gradient_of_the_log_density(t):
  g = gmm8()
  rng = np.random.default_rng(0)
  x = g.sample(64, rng) + t * rng.standard_normal((64, 2))
  eps = 1e-6 * max(1.0, t)
  fd = np.stack([(g.log_density(x + eps * e, t) - g.log_density(x - eps * e, t)) / (2 * eps)
                 for e in np.eye(2)], axis=1)
  s = g.score(x, t)
  assert np.all(np.isfinite(s))
  np.testing.assert_allclose(s, fd, rtol=1e-5, atol=1e-6 / max(1.0, t))
  # Tweedie: D = x + t^2 score
  np.testing.assert_allclose(g.denoiser(x, t), x + t**2 * s, rtol=1e-9, atol=1e-9)


def test_far_points_are_stable():
  """log-sum-exp: points 40 std from every mode at t = 0.002 still give finite, exact scores."""
  g = gmm8()
  x = np.array([[0.0, 0.0], [3.0, -2.0]])
  s = g.score(x, 0.002)
  assert np.all(np.isfinite(s)) and np.all(np.isfinite(g.log_density(x, 0.002)))


def test_single_gaussian_ode_matches_closed_form():
  # For N(mu, s^2 I): x(t) = mu + (x_T - mu) sqrt(s^2 + t^2) / sqrt(s^2 + T^2).
  mu, s = np.array([0.3, -0.2]), 0.1
  g = GaussianMixture(mu[None], s)
  x = np.random.default_rng(1).standard_normal((16, 2)) * 5
  for T in (80.0, 3.0, 0.01):
    got = consistency_function(g, x, T)
    want = mu + (x - mu) * np.sqrt(s**2 + 0.002**2) / np.sqrt(s**2 + T**2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_rk4_has_converged():
  g = gmm8()
  rng = np.random.default_rng(2)
  x = g.sample(256, rng) + 80 * rng.standard_normal((256, 2))
  a = consistency_function(g, x, 80.0, steps=256)
  b = consistency_function(g, x, 80.0, steps=1024)
  assert np.max(np.abs(a - b)) < 1e-5


@pytest.mark.parametrize("t", [80.0, 1.0])
def test_true_consistency_function_maps_noise_to_the_mixture(t):
  g = gmm8()
  rng = np.random.default_rng(3)
  x = g.sample(4096, rng) + t * rng.standard_normal((4096, 2))
  m = toy2d_metrics(consistency_function(g, x, t).astype(np.float32), "gmm8")
  assert m["modes_covered"] == 1.0 and m["near_modes"] > 0.99 and m["swd"] < 0.03, m


def test_path_is_monotone_in_t_and_ends_at_the_endpoint():
  g = gmm8()
  x = np.random.default_rng(4).standard_normal((8, 2)) * 2
  end, path, ts = pf_ode(g, x, 2.0, 0.002, steps=64, return_path=True)
  assert path.shape == (65, 8, 2) and ts.shape == (65, 8)
  assert np.all(np.diff(ts, axis=0) < 0)
  np.testing.assert_array_equal(path[-1], end)
  np.testing.assert_allclose(ts[-1], 0.002, rtol=1e-12)


def test_jax_teacher_equals_numpy_denoiser():
  g = gmm8()
  rng = np.random.default_rng(5)
  s = np.exp(rng.uniform(np.log(0.002), np.log(80), 512))
  x = g.sample(512, rng) + s[:, None] * rng.standard_normal((512, 2))
  got = np.asarray(jax_denoiser(g)(None, jnp.asarray(x, jnp.float32), jnp.asarray(s, jnp.float32)))
  np.testing.assert_allclose(got, g.denoiser(x, s), rtol=1e-4, atol=1e-4)


def test_trigflow_state_maps_onto_the_same_trajectory():
  # x' = cos(t) x0 + sin(t) sd n  ->  x'/cos t = x0 + (sd tan t) n, sigma = sd tan t.
  rng = np.random.default_rng(6)
  x0, n, t, sd = rng.standard_normal((4, 2)), rng.standard_normal((4, 2)), np.full(4, 0.9), 0.7
  x, sigma = trigflow_to_sigma(np.cos(t)[:, None] * x0 + np.sin(t)[:, None] * sd * n, t, sd)
  np.testing.assert_allclose(x, x0 + (sd * np.tan(t))[:, None] * n, rtol=1e-12)
  np.testing.assert_allclose(sigma, sd * np.tan(t), rtol=1e-12)
