"""What the inference modes (sample, edit, eval, trajectories) share: restoring a trained run's
parameters from its workdir, and the model's consistency function in EDM coordinates."""
from __future__ import annotations

import os

from cmjax import checkpointing, config_base
from cmjax.config_validation import ConfigError, check_resume_compatible

# Fields an inference mode may set without contradicting the checkpoint's config (they include
# every sample.* and edit.* field).
INFERENCE_FIELDS = config_base.RESUMABLE_FIELDS


def restore_params(run, workdir: str, step: int = -1, which: str = "ema"):
  """(step, params) of a trained run: the newest readable checkpoint (step = -1) or `step`.

  which: 'ema' (the EMA copy, what the papers sample from) or 'raw' (the online parameters).
  Raises ConfigError (one line) when the workdir has no checkpoint, not that step, or one from
  a different config.
  """
  if which not in ("ema", "raw"):
    raise ConfigError(f"params must be 'ema' or 'raw', not {which!r}")
  config = run.config
  workdir = os.path.abspath(workdir)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise ConfigError(f"no checkpoint in {ckpt.directory}: train first (--mode train)")
    if step >= 0 and step not in steps:
      raise ConfigError(f"no checkpoint {step} in {ckpt.directory}; there are {list(steps)}")
    check = lambda saved: check_resume_compatible(saved, config, workdir, INFERENCE_FIELDS)
    target = checkpointing.abstract_with_shardings(run.abstract_state, run.state_sharding)
    if step >= 0:  # exactly this one: never set aside or fall back
      check(ckpt.read_config(step))
      try:
        found = (step, ckpt.restore(step, target)[0], None)
      except Exception as e:  # noqa: BLE001 - any read failure
        raise ConfigError(f"checkpoint {step} in {ckpt.directory} cannot be read "
                          f"({type(e).__name__})") from e
    else:
      found = ckpt.restore_newest(target, check)
  finally:
    ckpt.close()
  if found is None:
    raise ConfigError(f"no readable checkpoint in {ckpt.directory}")
  got, state, _ = found
  return got, (state.ema_params if which == "ema" else state.params)


def consistency_fn(run):
  """f(params, x (B, ...), sigma (B,)) in EDM coordinates for any run: a consistency model
  itself, a TrigFlow consistency model mapped onto the same trajectory, or a diffusion model's
  own ODE (`eval.ode_steps`) from (x, sigma) to eps (see `evaluation.consistency_error`)."""
  from cmjax.evaluation.consistency_error import model_consistency_fn

  c = run.config
  return model_consistency_fn(run.model_fn, run.objective.parametrization, run.diffusion, c.param,
                              c.eval.ode_steps)
