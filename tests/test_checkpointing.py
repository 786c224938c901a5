import jax
import pytest
import numpy as np
import optax

from cmjax import checkpointing, parallel
from cmjax.models.unet import UNet
from cmjax.train_state import init_train_state


@pytest.mark.slow
def test_orbax_round_trip_restores_every_leaf(tmp_path):
  model = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, dropout=0.0, groups=4)
  opt = optax.radam(1e-3)
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 1))
  # Make params, EMA and optimiser moments all different and non-trivial.
  trainable = (state.params, state.aux_params)
  grads = jax.tree.map(lambda p: jax.numpy.ones_like(p) * 0.1, trainable)
  updates, opt_state = opt.update(grads, state.opt_state, trainable)
  state = state.replace(step=state.step + 3, params=optax.apply_updates(trainable, updates)[0],
                        opt_state=opt_state,
                        ema_params=jax.tree.map(lambda p: p * 0.5 + 0.25, state.params))
  mesh = parallel.make_data_mesh()
  sh = jax.tree.map(lambda _: parallel.replicated(mesh), state)
  state = jax.device_put(state, sh)
  ck = checkpointing.Checkpointer(str(tmp_path / "ckpt"), max_to_keep=2)
  ck.save(3, state, {"a": {"b": [1, 2]}}, {"train_seconds": 1.5})
  ck.wait()
  assert ck.latest_step() == 3
  abstract = checkpointing.abstract_with_shardings(jax.eval_shape(lambda: state), sh)
  restored, meta = ck.restore(3, abstract)
  assert meta == {"train_seconds": 1.5}
  assert ck.read_config(3) == {"a": {"b": [1, 2]}}
  la, ta = jax.tree.flatten(state)
  lb, tb = jax.tree.flatten(restored)
  assert ta == tb and len(la) == len(lb) > 10
  for a, b in zip(la, lb):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert b.sharding.is_equivalent_to(parallel.replicated(mesh), b.ndim)
  ck.close()
