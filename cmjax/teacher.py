"""Loading the frozen teacher of a distillation run (CD: an 'edm' run; sCD: a 'trigflow' run).

The official CM code silently distils from a randomly initialised teacher when the path is
wrong. Here every problem stops the launch with one line, before anything is compiled:
no teacher_workdir configured, no checkpoint there, a teacher trained with another method,
on other data, or with another sigma_data, or (when the student starts from the teacher's
weights) a different backbone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import ml_collections

from cmjax import checkpointing
from cmjax.config_validation import ConfigError, config_to_json_dict, flatten


@dataclasses.dataclass
class Teacher:
  """fn(params, x (B, ...), t (B,)) -> (B, ...) in eval mode (a denoiser D for 'edm', F for
  'trigflow'); params: the teacher's EMA parameters; config: its run config; step: its step."""
  fn: Callable
  params: Any
  config: Any
  step: int


def load_teacher(config, objective, mesh) -> Teacher:
  """Reads the teacher named by config.<method>.teacher_workdir (newest checkpoint, EMA params).

  Raises ConfigError (one line) for every problem listed in the module docstring.
  """
  from cmjax.models import build_model
  from cmjax.objectives import build_objective
  from cmjax.parallel import replicated
  from cmjax.parametrization import build_preconditioner, make_model_fn
  from cmjax.train_state import build_optimizer, init_train_state
  from cmjax.data import IMAGE_SHAPES

  method, need = config.method, objective.teacher_method
  workdir = config[method].teacher_workdir
  if not workdir:
    raise ConfigError(f"{method}.teacher_workdir is empty: {method} distils a trained '{need}' "
                      f"teacher; train one (method='{need}') and pass its workdir")
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f"teacher checkpoint not found: {ckpt_dir} does not exist "
                      f"({method}.teacher_workdir={workdir!r})")
  ck = checkpointing.Checkpointer(ckpt_dir)
  try:
    step = ck.latest_step()
    if step is None:
      raise ConfigError(f"teacher checkpoint not found: no complete checkpoint in {ckpt_dir}")
    tcfg = ml_collections.ConfigDict(ck.read_config(step))
    if tcfg.method != need:
      raise ConfigError(f"teacher in {workdir} was trained with method '{tcfg.method}'; "
                        f"{method} needs a '{need}' teacher")
    for key in ("data.name", "param.sigma_data"):
      a, b = flatten(tcfg.to_dict()).get(key), flatten(config.to_dict()).get(key)
      if a != b:
        raise ConfigError(f"teacher in {workdir} has {key}={a!r} but this run has {b!r}")
    t_model, s_model = config_to_json_dict(tcfg.model), config_to_json_dict(config.model)
    if config[method].init_from_teacher and t_model != s_model:
      diff = {k: (t_model.get(k), s_model.get(k)) for k in sorted(set(t_model) | set(s_model))
              if t_model.get(k) != s_model.get(k)}
      raise ConfigError(f"{method}.init_from_teacher needs the teacher's backbone, but model "
                        f"differs (teacher, this run): {diff}")
    model = build_model(tcfg.model)
    t_obj = build_objective(tcfg)
    optimizer = build_optimizer(tcfg.optim)
    shape = IMAGE_SHAPES[tcfg.data.name]
    abstract = jax.eval_shape(lambda k: init_train_state(model, optimizer, k, shape, t_obj),
                              jax.random.key(0))
    rep = replicated(mesh)
    target = checkpointing.abstract_with_shardings(abstract, jax.tree.map(lambda _: rep, abstract))
    state, _ = ck.restore(step, target)
  finally:
    ck.close()
  precond = build_preconditioner(t_obj.parametrization, tcfg.param.sigma_data, tcfg.param.sigma_min)
  model_fn = make_model_fn(model, precond)
  fn = lambda params, x, t: model_fn(params, x, t)
  return Teacher(fn=fn, params=state.ema_params, config=tcfg, step=int(step))
