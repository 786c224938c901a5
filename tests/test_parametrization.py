import jax
import pytest
import jax.numpy as jnp
import numpy as np

from cmjax.models.unet import UNet
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner, make_model_fn


def _model_and_params(dropout=0.0):
  model = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, dropout=dropout, groups=4)
  x = jnp.zeros((1, 8, 8, 1))
  params = model.init(jax.random.key(0), x, jnp.zeros((1,)))["params"]
  # The output conv is zero-initialised; perturb every leaf so F(x) != 0 and the test can fail.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  leaves = [l + 0.3 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
  return model, jax.tree.unflatten(tree, leaves)


@pytest.mark.slow
def test_boundary_condition_exact():
  model, params = _model_and_params()
  pre = ConsistencyPreconditioner(sigma_data=0.5, sigma_min=0.002)
  f = jax.jit(make_model_fn(model, pre))  # one program, not an eager U-Net op by op
  x = jax.random.normal(jax.random.key(2), (4, 8, 8, 1)) * 3.0
  out = f(params, x, jnp.full((4,), 0.002))
  np.testing.assert_allclose(np.asarray(out), np.asarray(x), atol=1e-6, rtol=0)
  # ... and the network does matter away from the boundary.
  out_t = f(params, x, jnp.full((4,), 1.0))
  assert float(jnp.max(jnp.abs(out_t - x))) > 1e-2


def test_cm_coefficients_match_paper_formula():
  pre = ConsistencyPreconditioner(sigma_data=0.5, sigma_min=0.002)
  t = 1.5
  c_skip, c_out, c_in, c_noise = [float(v) for v in pre.coefficients(jnp.float32(t))]
  # Song et al. 2023, App. C: c_skip = sd^2/((t-eps)^2+sd^2), c_out = sd (t-eps)/sqrt(t^2+sd^2)
  assert np.isclose(c_skip, 0.25 / (1.498**2 + 0.25), rtol=1e-6)
  assert np.isclose(c_out, 0.5 * 1.498 / np.sqrt(2.25 + 0.25), rtol=1e-6)
  assert np.isclose(c_in, 1 / np.sqrt(2.5), rtol=1e-6)
  assert np.isclose(c_noise, 0.25 * np.log(1.5), rtol=1e-6)


def test_edm_coefficients():
  c_skip, c_out, c_in, _ = [float(v) for v in EDMPreconditioner(0.5).coefficients(jnp.float32(2.0))]
  assert np.isclose(c_skip, 0.25 / 4.25) and np.isclose(c_out, 1.0 / np.sqrt(4.25))
  assert np.isclose(c_in, 1 / np.sqrt(4.25))


@pytest.mark.slow
def test_per_example_dropout_keys():
  model, params = _model_and_params(dropout=0.5)
  f = jax.jit(make_model_fn(model, ConsistencyPreconditioner()))
  x = jax.random.normal(jax.random.key(3), (4, 8, 8, 1))
  t = jnp.full((4,), 2.0)
  keys = jax.random.split(jax.random.key(4), 4)
  a = f(params, x, t, keys)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(f(params, x, t, keys)))
  b = f(params, x, t, jax.random.split(jax.random.key(5), 4))
  assert float(jnp.min(jnp.max(jnp.abs(a - b), axis=(1, 2, 3)))) > 1e-4  # every example differs
  # Example i's output depends only on its own key, not on the rest of the batch.
  sub = f(params, x[1:3], t[1:3], keys[1:3])
  np.testing.assert_allclose(np.asarray(sub), np.asarray(a[1:3]), atol=1e-5)
  # Eval mode (no keys) is deterministic and differs from dropout mode.
  assert float(jnp.max(jnp.abs(f(params, x, t) - a))) > 1e-4
