"""Zero-shot editing (CM paper Alg. 4), interpolation and the t_mid ternary search, on transparent
models: operators are orthogonal and keep exactly what they should; the known part of the
reference survives every step; noise is per example; the search finds a known minimum."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import editing
from cmjax.modes.sample import ternary_search


def _images(n=3, h=8, w=8, c=3, seed=0):
  return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, h, w, c)), jnp.float32)


def _model(params, x, s):
  """A smooth, nonlinear stand-in for f: it changes every pixel, so only the replacement can
  keep the known part."""
  return jnp.tanh(0.3 * x + 0.1 * s[:, None, None, None]) - 0.2


@pytest.mark.parametrize("op", [editing.colorize_operator(), editing.superres_operator(2),
                                editing.superres_operator(4)])
def test_operators_are_orthogonal_and_invertible(op):
  x = _images()
  np.testing.assert_allclose(op.inverse(op.forward(x)), x, atol=1e-5)
  np.testing.assert_allclose(jnp.sum(op.forward(x) ** 2), jnp.sum(x ** 2), rtol=1e-5)  # norm kept


def test_known_coefficients_are_the_grey_level_and_the_low_resolution_image():
  x = _images()
  grey = editing.colorize_operator().forward(x)[..., 0]
  np.testing.assert_allclose(grey, jnp.sum(x, -1) / math.sqrt(3), atol=1e-5)
  sr = editing.superres_operator(2)
  low = np.asarray(x).reshape(3, 4, 2, 4, 2, 3).mean((2, 4))
  np.testing.assert_allclose(sr.forward(x)[..., 0], 2 * low, atol=1e-5)   # p * patch mean
  # observe(): what the edit sees = block-constant low-res image / grey image.
  np.testing.assert_allclose(sr.observe(x), np.repeat(np.repeat(low, 2, 1), 2, 2), atol=1e-5)
  np.testing.assert_allclose(editing.colorize_operator().observe(x),
                             np.repeat((grey / math.sqrt(3))[..., None], 3, -1), atol=1e-5)


@pytest.mark.parametrize("task", ["inpaint", "colorize", "superres"])
def test_edit_keeps_the_known_part_exactly_and_changes_the_rest(task):
  y = _images()
  if task == "inpaint":
    op = editing.inpaint_operator(editing.inpaint_mask("bottom", 8, 8))
  elif task == "colorize":
    op = editing.colorize_operator()
  else:
    op = editing.superres_operator(2)
  x = jax.jit(lambda y: editing.edit(_model, None, y, op, (80.0, 2.0, 0.5), jax.random.key(0)))(y)
  keep = jnp.asarray(op.keep)
  known_y, known_x = op.forward(y) * keep, op.forward(x) * keep
  if task == "inpaint":  # the known pixels are the reference's, bit for bit
    m = np.broadcast_to(np.asarray(op.keep) > 0, y.shape)
    np.testing.assert_array_equal(np.asarray(x)[m], np.asarray(y)[m])
  np.testing.assert_allclose(known_x, known_y, atol=2e-5)
  unknown = np.asarray(op.forward(x) * (1 - keep))
  assert np.abs(unknown).max() > 0.05  # the model filled in something
  # a skipped replacement would be caught: the model alone does not keep the known part
  raw = _model(None, op.observe(y) + 80.0 * jax.random.normal(jax.random.key(1), y.shape),
               jnp.full((3,), 80.0))
  assert np.abs(np.asarray(op.forward(raw) * keep - known_y)).max() > 0.1


def test_edit_noise_is_per_example():
  y = _images(4)
  op = editing.inpaint_operator(editing.inpaint_mask("center", 8, 8))
  full = editing.edit(_model, None, y, op, (80.0, 1.0), jax.random.key(3))
  part = editing.edit(_model, None, y[2:], op, (80.0, 1.0), jax.random.key(3), first_index=2)
  np.testing.assert_allclose(full[2:], part, atol=1e-6)
  other = editing.edit(_model, None, y, op, (80.0, 1.0), jax.random.key(4))
  assert np.abs(np.asarray(other - full)).max() > 1e-3


def test_sdedit_starts_from_the_corrupted_image():
  y = _images(2)
  ident = lambda p, x, s: x  # f = identity: SDEdit returns y + t_1 z (+ re-noising), clipped
  x = editing.sdedit(ident, None, y, (0.001,), jax.random.key(0), sigma_min=0.0005)
  np.testing.assert_allclose(x, jnp.clip(y, -1, 1), atol=5e-3)


def test_slerp_end_points_and_norm():
  z0 = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
  z1 = jax.random.normal(jax.random.key(1), (2, 8, 8, 1))
  z = editing.slerp(z0, z1, jnp.array([0.0, 0.5, 1.0]))
  assert z.shape == (3, 2, 8, 8, 1)
  np.testing.assert_allclose(z[0], z0, atol=1e-5)
  np.testing.assert_allclose(z[2], z1, atol=1e-5)
  # halfway between two (nearly orthogonal) Gaussian vectors keeps the norm, unlike the mean
  n0 = jnp.linalg.norm(z0.reshape(2, -1), axis=-1)
  n_mid = jnp.linalg.norm(z[1].reshape(2, -1), axis=-1)
  np.testing.assert_allclose(n_mid, n0, rtol=0.15)
  assert float(jnp.linalg.norm(((z0 + z1) / 2).reshape(2, -1), axis=-1)[0]) < 0.85 * float(n0[0])
  x = editing.interpolate(_model, None, z0, z1, [0.0, 1.0], 80.0)
  assert x.shape == (2, 2, 8, 8, 1)


def test_masks_and_operator_checks():
  m = editing.inpaint_mask("bottom", 8, 8)
  assert m.shape == (8, 8, 1) and m[:4].min() == 1 and m[4:].max() == 0
  assert editing.inpaint_mask("center", 8, 8)[2:6, 2:6].max() == 0
  with pytest.raises(ValueError, match="unknown inpainting mask"):
    editing.inpaint_mask("diagonal", 8, 8)
  with pytest.raises(ValueError, match="needs RGB"):
    editing.check_operator(editing.colorize_operator(), (8, 8, 1))
  with pytest.raises(ValueError, match="must divide"):
    editing.check_operator(editing.superres_operator(3), (8, 8, 1))


def test_ternary_search_finds_a_known_minimum():
  calls = []

  def score(t):
    calls.append(t)
    return (math.log(t) - math.log(1.3)) ** 2

  best, history = ternary_search(score, 0.1, 10.0, iters=8)
  assert len(history) == len(calls) == 16
  assert abs(math.log(best) - math.log(1.3)) < 0.1
  assert min(v for _, v in history) == score(best)
  with pytest.raises(ValueError):
    ternary_search(score, 0.0, 1.0, 2)
