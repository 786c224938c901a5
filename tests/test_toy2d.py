"""2-D toy data, exact toy metrics, and the MLP backbone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from cmjax.data.toy2d import (GMM8_MEANS, TOY2D_NAMES, Toy2DSource, mode_centers, sample_toy2d,
                              toy2d_sigma_data)
from cmjax.evaluation.toy2d_metrics import (fraction_near_modes, modes_covered, save_scatter_png,
                                            sliced_wasserstein, toy2d_metrics)
from cmjax.models.mlp import MLP


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_moments_match_closed_form(name):
  x = sample_toy2d(name, 100_000, np.random.default_rng(0))
  assert x.shape == (100_000, 2) and x.dtype == np.float32
  # Mean 0 to 0.01 (standard error ~0.002); std within 1% of sigma_data (s.e. ~0.2%).
  np.testing.assert_allclose(x.mean(axis=0), 0.0, atol=0.01)
  np.testing.assert_allclose(np.sqrt(x.var(axis=0).mean()), toy2d_sigma_data(name), rtol=0.01)
  assert mode_centers(name).shape == (8, 2)


def test_closed_form_values():
  assert toy2d_sigma_data("gmm8") == pytest.approx(np.sqrt(0.5 + 0.05 ** 2))
  assert toy2d_sigma_data("checkerboard") == pytest.approx(np.sqrt(1.0 / 3.0))
  np.testing.assert_allclose(np.linalg.norm(GMM8_MEANS, axis=1), 1.0)


def test_source_deterministic_and_process_split():
  full = Toy2DSource("gmm8", 64, seed=3)
  halves = [Toy2DSource("gmm8", 64, seed=3, process_index=i, process_count=2) for i in range(2)]
  assert full.image_shape == (2,)
  for step in (0, 7):
    b = full.batch(step)["image"]
    assert b.shape == (64, 2) and b.dtype == np.float32
    np.testing.assert_array_equal(b, full.batch(step)["image"])
    np.testing.assert_array_equal(b, np.concatenate([h.batch(step)["image"] for h in halves]))
  assert not np.array_equal(full.batch(0)["image"], full.batch(1)["image"])
  with pytest.raises(ValueError, match="known: gmm8, checkerboard") as err:
    Toy2DSource("moons", 64, seed=0)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_sliced_wasserstein(name):
  a = sample_toy2d(name, 2000, np.random.default_rng(1))
  b = sample_toy2d(name, 2000, np.random.default_rng(2))
  # Two independent 2000-point samples: SW1 ~0.02-0.04 (mostly mode-count noise).
  assert sliced_wasserstein(a, b) < 0.05
  assert sliced_wasserstein(a, a) == 0.0
  # Unequal sizes: repeating every point keeps the quantile functions, so the distance.
  assert sliced_wasserstein(a, np.repeat(a, 2, axis=0)) == pytest.approx(0.0, abs=1e-12)
  assert sliced_wasserstein(a, np.repeat(b, 3, axis=0)) == pytest.approx(sliced_wasserstein(a, b))
  # A pure shift v: SW1 = |v| * mean |cos| over the directions, -> 0.3 * 2/pi for uniform ones
  # (512 directions: relative standard error of the mean |cos| ~2%; allow 6%).
  sw = sliced_wasserstein(a, a + np.array([0.3, 0.0]))
  theta = np.random.default_rng(0).standard_normal((512, 2))  # the directions of seed=0
  exact = 0.3 * np.mean(np.abs(theta[:, 0]) / np.linalg.norm(theta, axis=1))
  assert sw == pytest.approx(exact, rel=1e-6)
  assert sw == pytest.approx(0.3 * 2 / np.pi, rel=0.06)
  # More directions (on a small cloud, since a shift's SW1 does not depend on it): within 2%.
  many = sliced_wasserstein(a[:50], a[:50] + np.array([0.0, 0.3]), num_projections=20_000)
  assert many == pytest.approx(0.3 * 2 / np.pi, rel=0.02)


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_modes_covered(name):
  x = sample_toy2d(name, 4000, np.random.default_rng(0))
  assert modes_covered(x, name) == 1.0
  assert fraction_near_modes(x, name) > 0.99
  nearest = np.argmin(np.linalg.norm(x[:, None] - mode_centers(name)[None], axis=-1), axis=1)
  assert modes_covered(x[nearest != 3], name) == 7 / 8
  # All samples at one point away from every mode: the origin for gmm8, a white square's centre.
  off = np.array([0.0, 0.0]) if name == "gmm8" else np.array([0.25, -0.25])
  far = np.tile(off, (1000, 1))
  assert modes_covered(far, name) == 0.0 and fraction_near_modes(far, name) == 0.0
  m = toy2d_metrics(x, name, num_reference=2000)
  assert set(m) == {"swd", "modes_covered", "near_modes"} and m["swd"] < 0.05


def test_save_scatter_png(tmp_path):
  path = tmp_path / "sub" / "scatter.png"
  x = sample_toy2d("gmm8", 500, np.random.default_rng(0))
  save_scatter_png(x, str(path), reference=sample_toy2d("gmm8", 500, np.random.default_rng(1)),
                   size=128)
  img = np.asarray(Image.open(path))
  assert img.shape == (128, 128, 3)
  assert (img.min(axis=-1) < 100).sum() > 100  # dark sample points were drawn


def test_mlp_shapes_zero_init_and_dropout():
  # Whole-program jit: one compile each is much faster than eager op-by-op on CPU.
  model = MLP(hidden=32, depth=2, dropout=0.5)
  init = jax.jit(model.init)
  apply = jax.jit(model.apply, static_argnames="train")
  x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 2)), jnp.float32)
  c = jnp.linspace(-1.0, 1.0, 5)
  params = init(jax.random.PRNGKey(1), x, c)
  out = apply(params, x, c)
  assert out.shape == (5, 2)
  np.testing.assert_array_equal(out, 0.0)  # zero-initialised last layer
  img = jnp.ones((3, 4, 4, 1))
  assert apply(init(jax.random.PRNGKey(1), img, c[:3]), img, c[:3]).shape == img.shape

  # Perturb every parameter so the output is non-zero, then compare dropout modes.
  rng = np.random.default_rng(2)
  params = jax.tree_util.tree_map(
      lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(np.float32), params)
  drop = lambda seed: {"dropout": jax.random.PRNGKey(seed)}
  ref = jax.jit(MLP(hidden=32, depth=2, dropout=0.0).apply)(params, x, c)
  assert np.abs(ref).max() > 0
  np.testing.assert_allclose(apply(params, x, c, rngs=drop(0)), ref, rtol=1e-6)
  np.testing.assert_allclose(apply(params, x, c, train=False, rngs=drop(1)), ref, rtol=1e-6)
  t0 = apply(params, x, c, train=True, rngs=drop(0))
  assert not np.allclose(t0, ref)
  assert not np.allclose(t0, apply(params, x, c, train=True, rngs=drop(1)))
  np.testing.assert_array_equal(t0, apply(params, x, c, train=True, rngs=drop(0)))
