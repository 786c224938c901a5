"""`Run(config)`: everything a config builds (model, objective, optimiser, mesh, jitted step and
samplers), shared by training (`cmjax.trainer`) and the inference modes.

Named PRNG streams derive from config.seed (`stream_key`). Durations and the EMA may be given
in images seen (train.duration_kimg, train.ema_halflife_kimg, optim.warmup_kimg); `Run`
resolves them to steps for the configured batch size (`schedules.resolve_durations`).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cmjax import checkpointing, parallel, sampling
from cmjax.config_validation import validate_config
from cmjax.data import build_source, image_shape
from cmjax.models import build_model
from cmjax.objectives import DIFFUSION_METHODS, build_objective
from cmjax.parametrization import bind_labels, build_preconditioner, make_model_fn
from cmjax.samplers import make_sample_fn, named_samplers
from cmjax.schedules import resolve_durations
from cmjax.teacher import load_init_params, load_teacher
from cmjax.train_state import build_optimizer, init_train_state
from cmjax.train_step import make_train_step

# Named PRNG streams derived from config.seed.
STREAMS = {"init": 0, "train": 1, "sample": 2}
_LABEL_STREAM = 7  # fold_in(sample key, 7): the classes drawn for class-conditional samples

COMPUTE_DTYPES = {"fp32": None, "bf16": jnp.bfloat16}


def _draw_classes(z_key, index, classes: int):
  """The class of sample i = index[k]: U{0..classes-1} from fold_in(fold_in(z_key, 7), i)."""
  label_key = jax.random.fold_in(z_key, _LABEL_STREAM)
  return jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(label_key, i), (), 0,
                                               classes))(index)


def stream_key(seed: int, name: str) -> jax.Array:
  """fold_in(key(seed), STREAMS[name]): independent keys for init, training and sampling."""
  return jax.random.fold_in(jax.random.key(seed), STREAMS[name])


class Run:
  """Everything built from a config: model, objective, optimiser, mesh, jitted functions.

  Attributes of note: num_steps (train.num_steps, or from train.duration_kimg), image_shape,
  num_classes (model.label_dim: 0 = unconditional), compute_dtype (train.precision),
  model_fn (`parametrization.make_model_fn`), train_step (jitted), named_samplers.
  """

  def __init__(self, config):
    validate_config(config, jax.device_count())
    self.config = config
    self.mesh = parallel.make_data_mesh()
    self.image_shape = image_shape(config)
    self.num_classes = int(config.model.label_dim)
    self.durations = resolve_durations(config)
    self.num_steps = self.durations.num_steps
    self.compute_dtype = COMPUTE_DTYPES[config.train.precision]
    self.model = build_model(config.model)
    objective = build_objective(config)
    self.precond = build_preconditioner(objective.parametrization, config.param.sigma_data,
                                        config.param.sigma_min)
    self.model_fn = make_model_fn(self.model, self.precond, self.compute_dtype)
    self.diffusion = config.method in DIFFUSION_METHODS
    self.named_samplers = named_samplers(config, objective.parametrization, self.diffusion)
    rep = parallel.replicated(self.mesh)
    self.teacher = None
    exact_teacher = config.method == "cd" and config.cd.exact_teacher
    if exact_teacher:  # CD-exact: the analytic denoiser of the 2-D mixture (no parameters)
      from cmjax.exact_gmm import gmm8, jax_denoiser
      objective = dataclasses.replace(objective, teacher_fn=jax_denoiser(gmm8()))
    elif objective.teacher_method is not None:  # CD, sCD: refuse to start without the teacher
      self.teacher = load_teacher(config, objective, self.mesh)
      objective = dataclasses.replace(objective, teacher_fn=self.teacher.fn)
    self.objective = objective
    self.optimizer = build_optimizer(config.optim, self.durations.warmup_steps)
    self.lr_schedule = self.durations.lr_schedule
    teacher_params = self.teacher.params if self.teacher is not None else ({} if exact_teacher else None)
    self._frozen = {"teacher_params": teacher_params,
                    "distance_params": None}
    if config[config.method].get("distance") == "lpips":
      from cmjax.lpips import load_lpips_params
      self._frozen["distance_params"] = load_lpips_params(config[config.method].lpips_weights)
    from_teacher = self.teacher is not None and config[config.method].init_from_teacher
    self._init_params, self.init_step = None, None
    if config.train.init_workdir:  # e.g. ECT from a pretrained EDM run
      self._init_params, self.init_step = load_init_params(config, self.mesh)

    def init(key, frozen, start):  # arrays are arguments, not constants baked into the program
      start = frozen["teacher_params"] if from_teacher else start
      return init_train_state(self.model, self.optimizer, key, self.image_shape, objective,
                              init_params=start, num_classes=self.num_classes, **frozen)

    self.abstract_state = jax.eval_shape(init, stream_key(config.seed, "init"), self._frozen,
                                         self._init_params)
    if config.train.sharding == "fsdp":  # params, EMA and optimiser moments split over devices
      self.state_sharding = parallel.fsdp_sharding(self.abstract_state, self.mesh)
    else:  # 'data': replicated parameters
      self.state_sharding = jax.tree.map(lambda _: rep, self.abstract_state)
    self.batch_sharding = {"image": parallel.batch_sharding(self.mesh)}
    if self.num_classes:
      self.batch_sharding["label"] = parallel.batch_sharding(self.mesh)
    self._init = jax.jit(init, out_shardings=self.state_sharding)
    self._sampler_cache = {}
    step = make_train_step(self.model_fn, self.objective, self.optimizer, self.durations.ema,
                           lr_schedule=self.lr_schedule,
                           skip_nonfinite=config.train.skip_nonfinite,
                           grad_accum=config.train.grad_accum)
    self.train_step = jax.jit(step, in_shardings=(self.state_sharding, self.batch_sharding, rep),
                              out_shardings=(self.state_sharding, rep), donate_argnums=0)

  def init_state(self):
    return self._init(stream_key(self.config.seed, "init"), self._frozen, self._init_params)

  def source(self, process_index: int = 0, process_count: int = 1):
    """The training data source of this process (`cmjax.data.build_source`)."""
    return build_source(self.config, process_index, process_count)

  def device_batch(self, local: dict) -> dict:
    """This process's numpy batch -> the global batch on the mesh (labels kept only for a
    class-conditional model, so an unconditional run never sees them)."""
    keep = {k: v for k, v in local.items() if k in self.batch_sharding}
    return parallel.global_batch(keep, self.mesh)

  def compile_train_step(self):
    """AOT-compiles the train step; returns (compiled, seconds, memory) where memory is XLA's
    memory analysis in MiB per device ({} where the backend gives none)."""
    b = self.config.train.batch_size
    batch = {"image": jax.ShapeDtypeStruct((b,) + self.image_shape, jnp.float32,
                                           sharding=self.batch_sharding["image"])}
    if self.num_classes:
      batch["label"] = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=self.batch_sharding["label"])
    state = checkpointing.abstract_with_shardings(self.abstract_state, self.state_sharding)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=parallel.replicated(self.mesh))
    t0 = time.perf_counter()
    compiled = self.train_step.lower(state, batch, key).compile()
    return compiled, time.perf_counter() - t0, memory_report(compiled)

  def _sampler(self, spec: tuple):
    """(jitted sampler, its traced levels) for a sampler spec (`cmjax.samplers`).

    Consistency samplers take their noise levels (or TrigFlow times) as a traced argument, so
    one compile serves every list of the same length (the t_mid search tries many); the ODE
    samplers are compiled per spec.
    """
    levels = spec[0] in ("cm", "trigflow_cm")
    key = (spec[0], len(spec[1])) if levels else spec
    if key not in self._sampler_cache:
      sh = parallel.batch_sharding(self.mesh)
      bs, shape, classes = self.config.eval.batch_size, self.image_shape, self.num_classes

      def sample(params, z_key, renoise_key, start, class_label, traced_levels):
        z = jax.lax.with_sharding_constraint(sampling.sample_noise(z_key, bs, shape, start), sh)
        labels = None
        if classes:  # class_label >= 0: that class; else class i ~ U{0..classes-1} from key i
          drawn = _draw_classes(z_key, start + jnp.arange(bs), classes)
          labels = jnp.where(class_label >= 0, class_label, drawn).astype(jnp.int32)
        s = (spec[0], traced_levels) if levels else spec
        fn = make_sample_fn(s, bind_labels(self.model_fn, labels), self.config.param)
        return fn(params, z, renoise_key, start)

      self._sampler_cache[key] = jax.jit(sample, out_shardings=sh)
    return self._sampler_cache[key], (jnp.asarray(spec[1], jnp.float32) if levels else None)

  def generate(self, params, num: int, spec: tuple, seed_offset: int = 0,
               class_label: int = -1) -> np.ndarray:
    """`num` samples (num, ...) from `params` with sampler `spec` (`cmjax.samplers`), on the mesh.

    Sample i depends only on (config.seed, seed_offset, i), not on the batch size or the
    device count; for a class-conditional model so does its class (uniform over the classes,
    or `class_label` for all when >= 0). Every process must call this (it is a collective);
    all get all samples.
    """
    if class_label >= self.num_classes > 0 or (class_label >= 0 and not self.num_classes):
      raise ValueError(f"class_label {class_label} is not a class of this model "
                       f"(model.label_dim={self.num_classes})")
    bs = self.config.eval.batch_size
    seed, rep = self.config.seed, parallel.replicated(self.mesh)
    z_key, renoise_key = jax.jit(lambda: tuple(jax.random.split(jax.random.fold_in(
        stream_key(seed, "sample"), seed_offset))), out_shardings=(rep, rep))()
    fn, levels = self._sampler(spec)
    out = []
    for start in range(0, num, bs):
      x = fn(params, z_key, renoise_key, start, class_label, levels)
      out.append(np.asarray(multihost_utils.process_allgather(x, tiled=True)))
    return np.concatenate(out)[:num]

  def sample_labels(self, num: int, seed_offset: int = 0, class_label: int = -1) -> np.ndarray:
    """The (num,) classes `generate` conditions sample i on (empty for unconditional models)."""
    if not self.num_classes:
      return np.zeros((0,), np.int32)
    if class_label >= 0:
      return np.full((num,), class_label, np.int32)
    z_key = jax.random.split(jax.random.fold_in(stream_key(self.config.seed, "sample"),
                                                seed_offset))[0]
    return np.asarray(_draw_classes(z_key, jnp.arange(num), self.num_classes), np.int32)


def memory_report(compiled) -> dict:
  """XLA's memory analysis of a compiled function in MiB per device: arguments, outputs,
  temporaries (activations), generated code, and their total less aliased (donated) bytes."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 - not every backend implements it
    return {}
  if m is None:
    return {}
  mib = lambda n: round(float(n) / 2**20, 2)  # noqa: E731
  fields = {"argument": "argument_size_in_bytes", "output": "output_size_in_bytes",
            "temp": "temp_size_in_bytes", "code": "generated_code_size_in_bytes",
            "alias": "alias_size_in_bytes"}
  out = {k: mib(getattr(m, f, 0)) for k, f in fields.items()}
  out["total"] = round(out["argument"] + out["output"] + out["temp"] + out["code"] - out["alias"], 2)
  return out
