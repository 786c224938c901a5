"""FSDP (parameters and optimiser state split over 8 devices) == data parallel."""
import jax
import pytest
import numpy as np

from cmjax import checkpointing, parallel
from cmjax.trainer import Run, stream_key


def _steps(sharding, n=2):
  from configs import digits_ect
  cfg = digits_ect.get_config("smoke")
  cfg.train.sharding = sharding
  cfg.model.channels = 16  # so that several kernels have >= 4096 elements and get split
  cfg.model.groups = 4
  run = Run(cfg)
  state = run.init_state()
  from cmjax.data import build_source
  source = build_source(cfg)
  for step in range(n):
    state, metrics = run.train_step(state, parallel.global_batch(source.batch(step), run.mesh),
                                    stream_key(cfg.seed, "train"))
  return run, state, metrics


@pytest.mark.slow
def test_fsdp_equals_data_parallel_and_checkpoints_reshard(tmp_path):
  run_d, sd, md = _steps("data")
  run_f, sf, mf = _steps("fsdp")
  split = [x for x in jax.tree.leaves(sf.params) if not x.sharding.is_fully_replicated]
  assert len(split) >= 3, "some parameters must actually be sharded"
  for x in split:
    assert x.addressable_shards[0].data.size * 8 == x.size
  split_opt = [x for x in jax.tree.leaves(sf.opt_state) if not x.sharding.is_fully_replicated]
  assert len(split_opt) >= 2 * len(split)  # Adam's two moments follow their parameters
  for a, b in zip(jax.tree.leaves(sd), jax.tree.leaves(sf)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(md["loss"]), float(mf["loss"]), rtol=1e-6)

  # A checkpoint written under fsdp restores into the replicated layout (and back).
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"))
  ck.save(2, sf, {}, {})
  ck.wait()
  restored, _ = ck.restore(2, checkpointing.abstract_with_shardings(
      run_d.abstract_state, run_d.state_sharding))
  ck.close()
  for a, b in zip(jax.tree.leaves(sf), jax.tree.leaves(restored)):
    assert b.sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
