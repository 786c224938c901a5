"""`Run(config)`: the training setup. The one place that reads the weights a training run starts
from or keeps frozen — a teacher checkpoint (CD, sCD), the LPIPS weights, `train.init_workdir` —
then jits the train step over the mesh.

Everything else comes from the pure builders (`cmjax.builders.build`); sampling goes through
`cmjax.sampler.Sampler`. The inference modes (`cmjax.modes`) never build a `Run`, so they read
neither the teacher directory nor the LPIPS file.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp

from cmjax import checkpointing, parallel
from cmjax.builders import COMPUTE_DTYPES, build, stream_key  # noqa: F401 - re-exported
from cmjax.data import build_source
from cmjax.exact_gmm import gmm8, jax_denoiser
from cmjax.lpips import load_lpips_params
from cmjax.models.edm2_unet import edm2_force_normalize
from cmjax.latent_vae import latent_decoder
from cmjax.sampler import Sampler
from cmjax.teacher import load_init_file, load_init_params, load_teacher
from cmjax.data.augment import make_augment
from cmjax.train_step import make_train_step


class Run:
  """A training run's setup: `built` (`cmjax.builders.Built`) plus the weights read from files.

  Attributes of note: num_steps, image_shape, num_classes, model_fn, objective (with its teacher
  function), named_samplers, teacher (a `cmjax.teacher.Teacher` or None), abstract_state and
  state_sharding, train_step (jitted), sampler (`cmjax.sampler.Sampler`).
  """

  def __init__(self, config):
    built = build(config)  # validates the config before any file is read or anything compiled
    self.built, self.config = built, config
    self.mesh, self.image_shape, self.num_classes = built.mesh, built.image_shape, built.num_classes
    self.durations, self.num_steps = built.durations, built.num_steps
    self.compute_dtype, self.model, self.model_fn = built.compute_dtype, built.model, built.model_fn
    self.precond, self.family, self.named_samplers = built.precond, built.family, built.named_samplers
    self.optimizer, self.lr_schedule = built.optimizer, built.durations.lr_schedule
    self.batch_sharding = built.batch_sharding
    section = config[config.method]
    objective, self.teacher = built.objective, None
    exact_teacher = bool(section.get("exact_teacher", False))
    if exact_teacher:  # CD-exact: the analytic denoiser of the 2-D mixture (no parameters)
      objective = dataclasses.replace(objective, teacher_fn=jax_denoiser(gmm8()))
    elif objective.teacher_method is not None:  # CD, sCD: refuse to start without the teacher
      self.teacher = load_teacher(config, objective, self.mesh)
      objective = dataclasses.replace(objective, teacher_fn=self.teacher.fn)
    self.objective = built.objective = objective
    teacher_params = self.teacher.params if self.teacher is not None else ({} if exact_teacher else None)
    self._frozen = {"teacher_params": teacher_params, "distance_params": None}
    if section.get("distance") == "lpips":
      self._frozen["distance_params"] = load_lpips_params(section.lpips_weights)
    from_teacher = self.teacher is not None and section.get("init_from_teacher", False)
    self._init_params, self.init_step = None, None
    if config.train.init_workdir:  # e.g. ECT from a pretrained EDM run
      self._init_params, self.init_step = load_init_params(config, self.mesh)
    elif config.train.init_from:  # e.g. ECT from EDM's published network
      self._init_params, self.init_step = load_init_file(config, self.mesh), 0

    init = built.init_fn(from_teacher)
    self.abstract_state = jax.eval_shape(init, stream_key(config.seed, "init"), self._frozen,
                                         self._init_params)
    self.state_sharding = built.state_sharding(self.abstract_state)
    rep = parallel.replicated(self.mesh)
    self._init = jax.jit(init, out_shardings=self.state_sharding)
    step = make_train_step(self.model_fn, self.objective, self.optimizer, self.durations.ema,
                           lr_schedule=self.lr_schedule,
                           skip_nonfinite=config.train.skip_nonfinite,
                           grad_accum=config.train.grad_accum,
                           augment=(make_augment(config.data.augment, config.data.augment_preset)
                                    if config.data.augment > 0 else None),
                           project=edm2_force_normalize if config.model.name == "edm2" else None)
    self.train_step = jax.jit(step, in_shardings=(self.state_sharding, self.batch_sharding, rep),
                              out_shardings=(self.state_sharding, rep), donate_argnums=0)
    self.sampler = Sampler(built, latent_decoder(config, self.mesh))  # latents: decoded to pixels

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

  def generate(self, params, num: int, spec: tuple, seed_offset: int = 0,
               class_label: int = -1):
    """`Sampler.generate` of this run (see `cmjax.sampler`)."""
    return self.sampler.generate(params, num, spec, seed_offset, class_label)

  def sample_labels(self, num: int, seed_offset: int = 0, class_label: int = -1):
    """`Sampler.sample_labels` of this run."""
    return self.sampler.sample_labels(num, seed_offset, class_label)


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
