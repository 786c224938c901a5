"""Helpers shared by the end-to-end tests."""
import os


def restore_latest(workdir, overrides=None):
  """The TrainState of the newest checkpoint in WORKDIR (a run of configs/digits_ect.py:smoke)."""
  from cmjax import checkpointing
  from cmjax.trainer import Run
  from configs import digits_ect

  cfg = digits_ect.get_config("smoke")
  if overrides:
    cfg.update_from_flattened_dict(overrides)
  run = Run(cfg)
  ck = checkpointing.Checkpointer(os.path.join(str(workdir), "checkpoints"))
  state, meta = ck.restore(ck.latest_step(), checkpointing.abstract_with_shardings(
      run.abstract_state, run.state_sharding))
  ck.close()
  return state, meta


def load_script(name: str):
  """The module scripts/<name>.py (scripts/ is not a package)."""
  import importlib.util

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(name, os.path.join(root, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def golden_params(model, x, **kw):
  """Deterministic parameters of a linen backbone from numpy (independent of jax's PRNG), the
  weights the EDM parity references were computed with: kernels N(0, 1/fan_in), scales
  1 + N(0, 0.01), everything else N(0, 0.01)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, jnp.zeros(x.shape[:1]), **kw))
  rng = np.random.default_rng(123)

  def leaf(path, s):
    z = rng.standard_normal(s.shape).astype(np.float32)
    if path[-1].key == "kernel":
      return z / np.sqrt(np.prod(s.shape[:-1]))
    return 0.1 * z + (1.0 if path[-1].key == "scale" else 0.0)
  return jax.tree_util.tree_map_with_path(leaf, shapes["params"])
