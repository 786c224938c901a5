"""The jit step on 8 devices == the jit step on 1 device == the pmap step, on one global batch."""
import jax
import pytest
import jax.numpy as jnp
import numpy as np
import optax

from cmjax import parallel
from cmjax.data.digits import load_digits_split
from cmjax.models.mlp import MLP
from cmjax.objectives.ect import ECTObjective
from cmjax.parametrization import ConsistencyPreconditioner, make_model_fn
from cmjax.train_state import init_train_state
from cmjax.train_step import make_train_step

B = 16


def _setup():
  # An MLP with dropout on the flattened digits: what is compared (per-example keys and dropout
  # masks across devices, the gradient all-reduce, the EMA) is the step's, not the network's,
  # and it compiles in a fraction of the U-Net's time (the U-Net's sharded step: test_fsdp.py,
  # test_hlo.py).
  model = MLP(hidden=32, depth=1, dropout=0.2)
  opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
  model_fn = make_model_fn(model, ConsistencyPreconditioner())
  obj = ECTObjective(q=2.0, stage_steps=1)
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 1))
  batches = [{"image": load_digits_split("train")[i * B:(i + 1) * B]} for i in range(2)]
  return model_fn, obj, opt, state, batches


def _run_jit(devices):
  model_fn, obj, opt, state, batches = _setup()
  mesh = parallel.make_data_mesh(devices)
  rep = parallel.replicated(mesh)
  state_sh = jax.tree.map(lambda _: rep, state)
  batch_sh = {"image": parallel.batch_sharding(mesh)}
  step = jax.jit(make_train_step(model_fn, obj, opt, 0.9), in_shardings=(state_sh, batch_sh, rep),
                 out_shardings=(state_sh, rep))
  state = jax.device_put(state, state_sh)
  for b in batches:
    state, metrics = step(state, parallel.global_batch(b, mesh), jax.random.key(7))
  return state, metrics


@pytest.mark.slow
def test_sharded_jit_equals_single_device_and_pmap():
  devices = jax.devices()
  assert len(devices) == 8, "tests/conftest.py sets 8 simulated devices"
  s1, m1 = _run_jit(devices[:1])
  s8, m8 = _run_jit(devices)

  model_fn, obj, opt, state, batches = _setup()
  pstep = jax.pmap(make_train_step(model_fn, obj, opt, 0.9, axis_name="data"), axis_name="data",
                   in_axes=(0, 0, None))
  ps = jax.tree.map(lambda x: jnp.stack([x] * 8), state)
  for b in batches:
    ps, pm = pstep(ps, {"image": b["image"].reshape(8, B // 8, 8, 8, 1)}, jax.random.key(7))
  sp = jax.tree.map(lambda x: x[0], ps)

  assert int(s1.step) == int(s8.step) == int(sp.step) == 2
  for other, name in ((s8, "8-device jit"), (sp, "pmap")):
    for a, b in zip(jax.tree.leaves(s1.params) + jax.tree.leaves(s1.ema_params),
                    jax.tree.leaves(other.params) + jax.tree.leaves(other.ema_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-6, rtol=1e-5, err_msg=name)
  for k in ("loss", "grad_norm", "t", "r"):
    np.testing.assert_allclose(float(m1[k]), float(m8[k]), rtol=1e-5)
    np.testing.assert_allclose(float(m1[k]), float(pm[k][0]), rtol=1e-5)
  # The step did something: parameters moved and differ from the initial ones.
  moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
              zip(jax.tree.leaves(state.params), jax.tree.leaves(s1.params)))
  assert moved > 1e-4


@pytest.mark.slow
def test_step_depends_on_key_and_step():
  model_fn, obj, opt, state, batches = _setup()
  step = jax.jit(make_train_step(model_fn, obj, opt, 0.9))
  _, ma = step(state, batches[0], jax.random.key(7))
  _, mb = step(state, batches[0], jax.random.key(8))
  _, mc = step(state.replace(step=jnp.int32(5)), batches[0], jax.random.key(7))
  assert float(ma["loss"]) != float(mb["loss"]) and float(ma["loss"]) != float(mc["loss"])
