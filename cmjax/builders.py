"""Pure builders: everything a config describes, built without reading a file.

`build(config)` validates the config and returns a `Built`: the mesh, the backbone, the objective
(without a teacher function: `cmjax.run` adds it), its model family and preconditioner, the model
function, the optimiser, the samplers the run reports, the batch shardings, and the abstract train
state. Training (`cmjax.run.Run`) adds the weights that live in files (teacher, LPIPS, initial
weights); the inference modes restore a checkpoint into `Built.abstract_state` and never read a
teacher or an LPIPS file.

Named PRNG streams derive from config.seed (`stream_key`). Durations and the EMA may be given in
images seen (train.duration_kimg, train.ema_halflife_kimg, optim.warmup_kimg); `build` resolves
them to steps for the configured batch size (`schedules.resolve_durations`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from cmjax import parallel
from cmjax.config_validation import validate_config
from cmjax.data import data_kind, image_shape
from cmjax.models import buffer_mask, build_model, num_classes
from cmjax.objectives import build_objective
from cmjax.parametrization import make_model_fn
from cmjax.schedules import Durations, resolve_durations
from cmjax.train_state import TrainState, build_optimizer, init_train_state

# Named PRNG streams derived from config.seed.
STREAMS = {"init": 0, "train": 1, "sample": 2}
COMPUTE_DTYPES = {"fp32": None, "bf16": jnp.bfloat16}


def stream_key(seed: int, name: str) -> jax.Array:
  """fold_in(key(seed), STREAMS[name]): independent keys for init, training and sampling."""
  return jax.random.fold_in(jax.random.key(seed), STREAMS[name])


@dataclasses.dataclass
class Built:
  """What a config describes (see the module docstring). model_fn(params, x, t, dropout_keys=None,
  labels=None, t2=None) is the preconditioned network; named_samplers ((name, spec), ...) the
  samplers a run reports; data_kind 'images' or 'points'."""
  config: Any
  mesh: Any
  image_shape: tuple
  num_classes: int
  data_kind: str
  durations: Durations
  compute_dtype: Any
  model: Any
  objective: Any
  family: Any
  precond: Callable
  model_fn: Callable
  optimizer: Any
  named_samplers: tuple
  batch_sharding: dict

  @property
  def num_steps(self) -> int:
    return self.durations.num_steps

  def init_fn(self, from_teacher: bool = False) -> Callable:
    """init(key, frozen, start) -> TrainState; frozen = {'teacher_params', 'distance_params'},
    start = initial backbone parameters or None (from_teacher: the teacher's parameters)."""
    def init(key, frozen, start):  # arrays are arguments, not constants baked into the program
      start = frozen["teacher_params"] if from_teacher else start
      return init_train_state(self.model, self.optimizer, key, self.image_shape, self.objective,
                              init_params=start, num_classes=self.num_classes,
                              num_times=self.family.num_times, **frozen)
    return init

  def abstract_state(self, frozen: Optional[dict] = None, start=None) -> TrainState:
    """The train state's shapes and dtypes (jax.eval_shape; nothing allocated). frozen: the
    teacher / distance parameters (or their ShapeDtypeStructs); None: neither."""
    frozen = frozen or {"teacher_params": None, "distance_params": None}
    return jax.eval_shape(self.init_fn(), stream_key(self.config.seed, "init"), frozen, start)

  def state_sharding(self, abstract: TrainState):
    """'fsdp': parameters, EMA and optimiser moments split over the devices; 'data': replicated."""
    if self.config.train.sharding == "fsdp":
      return parallel.fsdp_sharding(abstract, self.mesh)
    rep = parallel.replicated(self.mesh)
    return jax.tree.map(lambda _: rep, abstract)


def build(config, mesh=None) -> Built:
  """Validates `config` (one-line ConfigError, before anything is compiled) and builds it."""
  validate_config(config, jax.device_count())
  mesh = parallel.make_data_mesh() if mesh is None else mesh
  durations = resolve_durations(config)
  compute_dtype = COMPUTE_DTYPES[config.train.precision]
  model = build_model(config.model)
  objective = build_objective(config)
  family = objective.family
  precond = family.preconditioner(config.param)
  classes = num_classes(config.model)
  batch_sharding = {"image": parallel.batch_sharding(mesh)}
  if classes:
    batch_sharding["label"] = parallel.batch_sharding(mesh)
  return Built(config=config, mesh=mesh, image_shape=image_shape(config), num_classes=classes,
               data_kind=data_kind(config), durations=durations, compute_dtype=compute_dtype,
               model=model, objective=objective, family=family, precond=precond,
               model_fn=make_model_fn(model, precond, compute_dtype),
               optimizer=build_optimizer(config.optim, lr=durations.lr_schedule,
                                         frozen=buffer_mask(config.model)),
               named_samplers=family.named_samplers(config), batch_sharding=batch_sharding)
