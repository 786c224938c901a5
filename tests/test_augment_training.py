"""EDM's augmentation in the train step: each example is augmented with its own key stream, the
network gets the augmentation labels, configs are checked in one line. (The transforms
themselves: tests/test_augment.py; a whole step through `Run` on the shipped cifar10_meanflow
config: tests/test_paper_configs.py.)"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmjax.configs import cifar10_edm, cifar10_meanflow, digits_ect, toy2d_ect
from cmjax.data import check_data_config
from cmjax.data.augment import EDM_CIFAR10, EDM_CIFAR10_P, edm_augment, make_augment
from cmjax.errors import ConfigError
from cmjax.train_state import TrainState
from cmjax.train_step import AUGMENT_STREAM, example_keys, make_train_step

B = 4


def _model_fn(params, x, t, dropout_keys=None, labels=None, t2=None, augment_labels=None):
  """A transparent network: w x + (sum of the augmentation labels), per example."""
  extra = 0.0 if augment_labels is None else augment_labels.sum(-1)[:, None, None, None]
  return params["w"] * x + extra


def _objective(model_fn, params, x, keys, step, extra):
  out = model_fn(params, x, jnp.ones(x.shape[0]), keys)
  per = jnp.mean(out, axis=(1, 2, 3))
  return per, {"x_mean": jnp.mean(x, axis=(1, 2, 3)), "out_mean": per}


def _step(augment, x, key):
  params = {"w": jnp.float32(2.0)}
  opt = optax.sgd(0.0)
  state = TrainState(step=jnp.int32(3), params=params, ema_params=params,
                     opt_state=opt.init((params, {})), aux_params={})
  step = jax.jit(make_train_step(_model_fn, _objective, opt, 0.0, augment=augment))
  return step(state, {"image": x}, key)[1]


def test_the_step_augments_each_example_with_its_own_stream_and_conditions_the_network():
  x = jax.random.uniform(jax.random.key(0), (B, 8, 8, 3), minval=-1, maxval=1)
  key = jax.random.key(5)
  m = _step(make_augment(1.0, "edm_cifar10"), x, key)
  keys = jax.vmap(lambda k: jax.random.fold_in(k, AUGMENT_STREAM))(example_keys(key, jnp.int32(3), B))
  xa, labels = edm_augment(keys, x, 1.0, **EDM_CIFAR10)
  assert float(jnp.abs(xa - x).max()) > 0.1  # p = 1: every image changed
  np.testing.assert_allclose(m["x_mean"], jnp.mean(xa), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(m["out_mean"], jnp.mean(2.0 * jnp.mean(xa, axis=(1, 2, 3)) + labels.sum(-1)),
                             rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(labels).sum()) > 0
  # Without augmentation the objective sees the batch as it is and the network no labels.
  m0 = _step(None, x, key)
  np.testing.assert_allclose(m0["x_mean"], jnp.mean(x), rtol=1e-6)
  np.testing.assert_allclose(m0["out_mean"], 2.0 * jnp.mean(x), rtol=1e-6)


def test_shipped_configs_enable_the_papers_pipelines():
  edm = cifar10_edm.get_config()
  assert (edm.data.augment, edm.data.augment_preset, edm.model.augment_dim, edm.data.random_flip) == (
      EDM_CIFAR10_P, "edm_cifar10", 9, False)
  check_data_config(edm, 1)
  teacher = cifar10_edm.get_config("ncsnpp")  # the CM paper's teacher: flips, no augmentation
  assert (teacher.data.augment, teacher.model.augment_dim, teacher.data.random_flip) == (0.0, 0, True)
  mf = cifar10_meanflow.get_config()
  assert (mf.data.augment, mf.data.augment_preset, mf.model.augment_dim) == (0.12, "meanflow_cifar10", 6)
  check_data_config(mf, 1)


@pytest.mark.parametrize("change,needle", [
    (dict(augment=1.5), "data.augment is a probability"),
    (dict(augment_preset="ada"), "unknown data.augment_preset 'ada'"),
    (dict(random_flip=True), "both flip images"),
    (dict(model_augment_dim=6), "model.augment_dim=6 must equal the 9 labels"),
])
def test_bad_augmentation_settings_are_one_line(change, needle):
  c = cifar10_edm.get_config()
  if "model_augment_dim" in change:
    c.model.augment_dim = change.pop("model_augment_dim")
  c.data.update(**change)
  with pytest.raises(ConfigError, match=needle):
    check_data_config(c, 1)


def test_augmentation_needs_images_and_a_network_with_labels():
  c = digits_ect.get_config()
  c.data.augment = 0.1
  with pytest.raises(ConfigError, match="unet has none"):
    check_data_config(c, 1)
  t = toy2d_ect.get_config()
  t.data.augment = 0.1
  with pytest.raises(ConfigError, match="applies to images"):
    check_data_config(t, 1)
