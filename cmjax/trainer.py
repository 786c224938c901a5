"""`train_and_evaluate(config, workdir)`: the training loop behind `launch.py`.

Resumes from WORKDIR/checkpoints when one exists, writes TensorBoard scalars,
PNG grids of EMA samples and WORKDIR/summary.json.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from cmjax import checkpointing, config_base, parallel, sampling
from cmjax.evaluation.run_eval import evaluate, save_samples_picture
from cmjax.config_validation import (check_resume_compatible, config_to_json_dict,
                                     validate_config)
from cmjax.data import IMAGE_SHAPES, build_source
from cmjax.models import build_model
from cmjax.objectives import DIFFUSION_METHODS, build_objective
from cmjax.preemption import PreemptionGuard
from cmjax.parametrization import build_preconditioner, make_model_fn
from cmjax.samplers import make_sample_fn, named_samplers
from cmjax.teacher import load_teacher
from cmjax.run_logging import ScalarWriter, write_json_atomic
from cmjax.schedules import ema_decay_schedule, warmup_constant_lr
from cmjax.train_state import build_optimizer, init_train_state
from cmjax.train_step import make_train_step

log = logging.getLogger("cmjax")

# Named PRNG streams derived from config.seed.
STREAMS = {"init": 0, "train": 1, "sample": 2}


def stream_key(seed: int, name: str) -> jax.Array:
  """fold_in(key(seed), STREAMS[name]): independent keys for init, training and sampling."""
  return jax.random.fold_in(jax.random.key(seed), STREAMS[name])


class Run:
  """Everything built from a config: model, objective, optimiser, mesh, jitted functions."""

  def __init__(self, config):
    validate_config(config, jax.device_count())
    self.config = config
    self.mesh = parallel.make_data_mesh()
    self.image_shape = IMAGE_SHAPES[config.data.name]
    self.model = build_model(config.model)
    objective = build_objective(config)
    self.precond = build_preconditioner(objective.parametrization, config.param.sigma_data,
                                        config.param.sigma_min)
    self.model_fn = make_model_fn(self.model, self.precond)
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
    self.optimizer = build_optimizer(config.optim)
    self.lr_schedule = warmup_constant_lr(config.optim.lr, config.optim.warmup_steps)
    teacher_params = self.teacher.params if self.teacher is not None else ({} if exact_teacher else None)
    self._frozen = {"teacher_params": teacher_params,
                    "distance_params": None}
    if config[config.method].get("distance") == "lpips":
      from cmjax.lpips import load_lpips_params
      self._frozen["distance_params"] = load_lpips_params(config[config.method].lpips_weights)
    from_teacher = self.teacher is not None and config[config.method].init_from_teacher

    def init(key, frozen):  # frozen arrays are arguments, not constants baked into the program
      init_params = frozen["teacher_params"] if from_teacher else None
      return init_train_state(self.model, self.optimizer, key, self.image_shape, objective,
                              init_params=init_params, **frozen)

    self.abstract_state = jax.eval_shape(init, stream_key(config.seed, "init"), self._frozen)
    if config.train.sharding == "fsdp":  # params, EMA and optimiser moments split over devices
      self.state_sharding = parallel.fsdp_sharding(self.abstract_state, self.mesh)
    else:  # 'data': replicated parameters
      self.state_sharding = jax.tree.map(lambda _: rep, self.abstract_state)
    self.batch_sharding = {"image": parallel.batch_sharding(self.mesh)}
    self._init = jax.jit(init, out_shardings=self.state_sharding)
    self._sampler_cache = {}
    ema = ema_decay_schedule(config.train.ema_rate, config.train.ema_warmup)
    step = make_train_step(self.model_fn, self.objective, self.optimizer, ema,
                           lr_schedule=self.lr_schedule,
                           skip_nonfinite=config.train.skip_nonfinite)
    self.train_step = jax.jit(step, in_shardings=(self.state_sharding, self.batch_sharding, rep),
                              out_shardings=(self.state_sharding, rep), donate_argnums=0)

  def init_state(self):
    return self._init(stream_key(self.config.seed, "init"), self._frozen)

  def compile_train_step(self):
    """AOT-compiles the train step; returns (compiled, seconds)."""
    b = self.config.train.batch_size
    batch = {"image": jax.ShapeDtypeStruct((b,) + self.image_shape, jnp.float32,
                                           sharding=self.batch_sharding["image"])}
    state = checkpointing.abstract_with_shardings(self.abstract_state, self.state_sharding)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=parallel.replicated(self.mesh))
    t0 = time.perf_counter()
    compiled = self.train_step.lower(state, batch, key).compile()
    return compiled, time.perf_counter() - t0

  def _sampler(self, spec: tuple):
    """The jitted sampler for one sampler spec (`cmjax.samplers`), compiled once per run."""
    if spec not in self._sampler_cache:
      sh = parallel.batch_sharding(self.mesh)
      bs, shape = self.config.eval.batch_size, self.image_shape
      fn = make_sample_fn(spec, self.model_fn, self.config.param)

      def sample(params, z_key, renoise_key, start):
        z = jax.lax.with_sharding_constraint(sampling.sample_noise(z_key, bs, shape, start), sh)
        return fn(params, z, renoise_key, start)

      self._sampler_cache[spec] = jax.jit(sample, out_shardings=sh)
    return self._sampler_cache[spec]

  def generate(self, params, num: int, spec: tuple, seed_offset: int = 0) -> np.ndarray:
    """`num` samples (num, ...) from `params` with sampler `spec` (`cmjax.samplers`), on the mesh.

    Sample i depends only on (config.seed, seed_offset, i), not on the batch size or the
    device count. Every process must call this (it is a collective); all get all samples.
    """
    bs = self.config.eval.batch_size
    seed, rep = self.config.seed, parallel.replicated(self.mesh)
    z_key, renoise_key = jax.jit(lambda: tuple(jax.random.split(jax.random.fold_in(
        stream_key(seed, "sample"), seed_offset))), out_shardings=(rep, rep))()
    fn = self._sampler(spec)
    out = []
    for start in range(0, num, bs):
      x = fn(params, z_key, renoise_key, start)
      out.append(np.asarray(multihost_utils.process_allgather(x, tiled=True)))
    return np.concatenate(out)[:num]


def _sample_grids(run: Run, params, workdir: str, tag: str, is_main: bool) -> None:
  """Pictures of samples of every sampler (every process samples; process 0 writes)."""
  rows = run.config.eval.grid_rows
  for name, spec in run.named_samplers:
    imgs = run.generate(params, rows * rows, spec)
    if is_main:
      save_samples_picture(imgs, os.path.join(workdir, "samples", f"{tag}_{name}.png"),
                           run.config.data.name, rows)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the run in `workdir`, then evaluates; returns the summary dict."""
  workdir = os.path.abspath(workdir)
  run = Run(config)  # validates the config before anything is compiled
  is_main = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    max_to_keep=config.train.keep_checkpoints)
  try:
    return _resume_train_evaluate(run, ckpt, workdir, is_main)
  finally:
    ckpt.close()


def _resume_train_evaluate(run: Run, ckpt, workdir: str, is_main: bool) -> dict:
  config = run.config
  cfg_json = config_to_json_dict(config)
  check = lambda saved: check_resume_compatible(saved, config, workdir, config_base.RESUMABLE_FIELDS)
  summary_path = os.path.join(workdir, "summary.json")
  num_steps = config.train.num_steps
  latest = ckpt.latest_step()
  if latest is not None and latest >= num_steps and os.path.exists(summary_path):
    check(ckpt.read_config(latest))
    print(f"cmjax: training in {workdir} is already complete ({latest} steps); nothing to do.")
    with open(summary_path) as f:
      return json.load(f)

  target = checkpointing.abstract_with_shardings(run.abstract_state, run.state_sharding)
  found = ckpt.restore_newest(target, check) if latest is not None else None
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    write_json_atomic(os.path.join(workdir, "config.json"), cfg_json)
  if found is not None:
    step0, state, meta = found
    print(f"cmjax: resumed from {ckpt.directory} at step {step0}")
  else:
    state, meta = run.init_state(), {"train_seconds": 0.0}

  writer = ScalarWriter(workdir, enabled=is_main)
  try:
    out = _train_loop(run, state, meta, ckpt, writer, cfg_json, workdir, is_main)
    if out is None:  # preempted: a checkpoint is on disk, the next launch resumes
      return {"preempted": True, "steps": ckpt.latest_step()}
    state, train_seconds, compile_seconds, skipped = out
    ckpt.wait()
    result = evaluate(run, state.ema_params, workdir, is_main)
  finally:
    writer.close()
  final_step = int(state.step)
  summary = {
      "steps": final_step,
      "images_seen": final_step * config.train.batch_size,
      "train_seconds": round(train_seconds, 2),
      "compile_seconds": round(compile_seconds, 2),
      "method": config.method,
      "devices": jax.device_count(),
      "nonfinite_skipped": skipped,
      **({"teacher": {"workdir": os.path.abspath(config[config.method].teacher_workdir),
                      "step": run.teacher.step}} if run.teacher is not None else {}),
      **result,
  }
  if is_main:
    write_json_atomic(summary_path, summary)
    print("cmjax: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
  return summary


def _train_loop(run: Run, state, meta: dict, ckpt, writer, cfg_json: dict, workdir: str,
                is_main: bool):
  """Steps from state.step to train.num_steps; returns (state, train_seconds, compile_seconds,
  nonfinite_skipped), or None when a preemption signal stopped it after a checkpoint."""
  config = run.config
  num_steps, bsz = config.train.num_steps, config.train.batch_size
  start = int(state.step)
  prior_seconds = float(meta.get("train_seconds", 0.0))  # from earlier (resumed) launches
  skipped = [int(meta.get("nonfinite_skipped", 0))]
  if start >= num_steps:
    return state, prior_seconds, 0.0, skipped[0]
  source = build_source(config, jax.process_index(), jax.process_count())
  train_key = jax.jit(lambda: stream_key(config.seed, "train"),  # a global (multi-host) array
                      out_shardings=parallel.replicated(run.mesh))()
  step_fn, compile_seconds = run.compile_train_step()
  print(f"cmjax: train step compiled in {compile_seconds:.1f}s; "
        f"{jax.device_count()} device(s), global batch {bsz}")
  live = {"img_s": "-"}  # shown in the progress bar next to the loss
  t_loop = time.perf_counter()
  elapsed = lambda: prior_seconds + (time.perf_counter() - t_loop)
  t_last, n_last = t_loop, start
  pending = None  # metrics are fetched one step late, so logging never stalls the device
  with tqdm(total=num_steps, initial=start, desc="train", disable=not is_main,
            dynamic_ncols=True, mininterval=1.0) as pbar, PreemptionGuard() as guard:
    report = lambda done, metrics: _report(done, metrics, writer, pbar, live, skipped, config, ckpt)
    for step in range(start, num_steps):
      batch = parallel.global_batch(source.batch(step), run.mesh)
      state, metrics = step_fn(state, batch, train_key)
      if pending is not None:
        report(*pending)
      pending = (step + 1, metrics)
      done = step + 1
      pbar.update(1)
      if done % config.train.log_every == 0:
        now = time.perf_counter()
        ips = (done - n_last) * bsz / max(now - t_last, 1e-9)
        t_last, n_last = now, done
        live["img_s"] = f"{ips:.0f}"
        writer.scalars(done, {"perf/img_per_sec": ips})
      stop = guard.should_stop()
      if done % config.train.checkpoint_every == 0 or done == num_steps or stop:
        report(*pending)  # never checkpoint a state whose step was not finite
        pending = None
        ckpt.save(done, state, cfg_json, {"train_seconds": elapsed(), "images_seen": done * bsz,
                                          "data_position": done, "nonfinite_skipped": skipped[0]})
      if stop:
        ckpt.wait()
        pbar.close()
        print(f"cmjax: received {guard.signal_name}; saved checkpoint {done} in {ckpt.directory}; "
              f"rerun the same command to resume.")
        return None
      if config.train.sample_every and done % config.train.sample_every == 0:
        _sample_grids(run, state.ema_params, workdir, f"step{done:07d}", is_main)
    if pending is not None:
      report(*pending)
  return state, elapsed(), compile_seconds, skipped[0]


def _report(done: int, metrics, writer, pbar, live: dict, skipped: list, config, ckpt) -> None:
  """Logs the metrics of the step that ended at `done`; stops the run if it was not finite."""
  values = {k: float(v) for k, v in jax.device_get(metrics).items()}
  if values.get("skipped", 0.0) > 0:
    skipped[0] += 1
    live["skipped"] = skipped[0]
    log.warning("skipped the non-finite update of step %d (%d so far)", done - 1, skipped[0])
    return
  if not (math.isfinite(values["loss"]) and math.isfinite(values["grad_norm"])):
    pbar.close()
    terms = ", ".join(f"{k}={v:.4g}" for k, v in sorted(values.items()))
    last = ckpt.latest_step()
    where = f"step {last} in {ckpt.directory}" if last is not None else "none"
    raise FloatingPointError(f"non-finite loss or gradient at step {done - 1} ({terms}); "
                             f"last good checkpoint: {where}")
  if done % config.train.log_every == 0 or done == config.train.num_steps:
    writer.scalars(done, {f"train/{k}": v for k, v in values.items()})
    pbar.set_postfix(loss=f"{values['loss']:.4f}", **live, refresh=False)


def trajectories(config, workdir: str) -> dict:
  """`--mode trajectories`: WORKDIR/trajectories.png from the newest checkpoint's EMA params.

  Needs a toy2d_gmm8 run (the exact PF-ODE is known there); returns and prints the mean
  distance of the model's f along each exact trajectory to the trajectory's end.
  """
  from cmjax.config_validation import ConfigError
  from cmjax.evaluation.trajectories import write_trajectories

  if config.data.name != "toy2d_gmm8":
    raise ConfigError(f"--mode trajectories needs data toy2d_gmm8 (exact trajectories), not "
                      f"{config.data.name}")
  from cmjax.inference import restore_params

  workdir = os.path.abspath(workdir)
  run = Run(config)
  step, params = restore_params(run, workdir)
  out = write_trajectories(run, params, workdir, jax.process_index() == 0)
  out["step"] = step
  print(f"cmjax: wrote {out['path']} (checkpoint {step}); mean distance of f to the trajectory end "
        f"{out['mean_distance_to_end']:.4f} over {out['num_trajectories']} trajectories x "
        f"{out['marks_per_trajectory']} points")
  return out
