"""`train_and_evaluate(config, workdir)`: the training loop behind `launch.py`.

Resumes from WORKDIR/checkpoints when one exists, writes TensorBoard scalars,
PNG grids of EMA samples and WORKDIR/summary.json.
"""
from __future__ import annotations

import logging
import math
import os
import time

import jax
from tqdm.auto import tqdm

from cmjax import checkpointing, parallel
from cmjax.config_validation import check_resume_compatible, config_to_json_dict
from cmjax.errors import ConfigError
from cmjax.evaluation.run_eval import evaluate, save_samples_picture
from cmjax.preemption import PreemptionGuard
from cmjax.run import Run, stream_key
from cmjax.run_logging import ScalarWriter, read_json_of_type, write_json_atomic
from cmjax.workdir_lock import WorkdirLock

log = logging.getLogger("cmjax")


def _sample_grids(run: Run, params, workdir: str, tag: str, is_main: bool) -> None:
  """Pictures of samples of every sampler (every process samples; process 0 writes)."""
  rows = run.config.eval.grid_rows
  for name, spec in run.named_samplers:
    imgs = run.generate(params, rows * rows, spec)
    if is_main:
      save_samples_picture(imgs, os.path.join(workdir, "samples", f"{tag}_{name}.png"),
                           run.config, rows)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the run in `workdir`, then evaluates; returns the summary dict."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(os.path.join(workdir, "summary.json")):  # a foreign one: refused up front
    _read_summary(os.path.join(workdir, "summary.json"))
  run = Run(config)  # validates the config before anything is compiled
  is_main = jax.process_index() == 0
  with WorkdirLock(workdir, force=bool(config.train.force_lock)):  # one writer per workdir
    ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                      max_to_keep=config.train.keep_checkpoints)
    try:
      return _resume_train_evaluate(run, ckpt, workdir, is_main)
    finally:
      ckpt.close()


def _read_summary(path: str) -> dict:
  """WORKDIR/summary.json as a dict; ConfigError (one line) when it is not a JSON object (a
  hand-edited or foreign file: never overwritten, the user decides)."""
  return read_json_of_type(path, dict, f"{path} is not a summary written by cmjax ({{}}); move "
                           f"it away and rerun to evaluate again (nothing was changed)")


def _resume_train_evaluate(run: Run, ckpt, workdir: str, is_main: bool) -> dict:
  config = run.config
  cfg_json = config_to_json_dict(config)
  check = lambda saved: check_resume_compatible(saved, config, workdir)
  summary_path = os.path.join(workdir, "summary.json")
  num_steps = run.num_steps
  latest = ckpt.latest_step()
  summary_ok = os.path.exists(summary_path) and _read_summary(summary_path) is not None
  if latest is not None and latest >= num_steps and summary_ok:
    check(ckpt.read_config(latest))
    print(f"cmjax: training in {workdir} is already complete ({latest} steps); nothing to do.")
    return _read_summary(summary_path)

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
  if run.teacher is not None:  # the teacher this state holds: the one recorded when it was copied
    meta["teacher"] = meta.get("teacher") or run.teacher.source

  writer = ScalarWriter(workdir, enabled=is_main)
  try:
    out = _train_loop(run, state, meta, ckpt, writer, cfg_json, workdir, is_main)
    if out is None:  # preempted: a checkpoint is on disk, the next launch resumes
      return {"preempted": True, "steps": ckpt.latest_step()}
    state, train_seconds, compile_seconds, skipped, memory = out
    ckpt.wait()
    result = (evaluate(run.built, run.sampler, state.ema_params, workdir, is_main)
              if config.eval.at_end else {})
  finally:
    writer.close()
  final_step = int(state.step)
  summary = {
      "steps": final_step,
      "images_seen": final_step * config.train.batch_size,
      "train_seconds": round(train_seconds, 2),
      "compile_seconds": round(compile_seconds, 2),
      "train_step_memory_mib": memory,
      "precision": config.train.precision,
      "method": config.method,
      "devices": jax.device_count(),
      "nonfinite_skipped": skipped,
      **({"teacher": meta["teacher"]} if run.teacher is not None else {}),
      **result,
  }
  if is_main:
    write_json_atomic(summary_path, summary)
    print("cmjax: " + ", ".join(f"{k}={v}" for k, v in summary.items()))
  return summary


def _train_loop(run: Run, state, meta: dict, ckpt, writer, cfg_json: dict, workdir: str,
                is_main: bool):
  """Steps from state.step to run.num_steps; returns (state, train_seconds, compile_seconds,
  nonfinite_skipped, memory), or None when a preemption signal stopped it after a checkpoint.

  The data position saved in every checkpoint's meta is the number of batches consumed; a
  resumed run restarts the data iterator there, so it continues with the next batch."""
  config = run.config
  num_steps, bsz = run.num_steps, config.train.batch_size
  start = int(state.step)
  prior_seconds = float(meta.get("train_seconds", 0.0))  # from earlier (resumed) launches
  skipped = [int(meta.get("nonfinite_skipped", 0))]
  if start >= num_steps:
    return state, prior_seconds, 0.0, skipped[0], {}
  raw = meta.get("data_position", start)
  position = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
  if position != start:
    raise ConfigError(f"checkpoint {start} in {ckpt.directory} records data position {raw!r}, "
                      f"not {start}: its meta was changed (the data stream would not match the "
                      f"step); restore the original meta or use a new --workdir")
  source = run.source(jax.process_index(), jax.process_count())
  train_key = jax.jit(lambda: stream_key(config.seed, "train"),  # a global (multi-host) array
                      out_shardings=parallel.replicated(run.mesh))()
  step_fn, compile_seconds, memory = run.compile_train_step()
  mem = (f"; memory per device {memory['total']:.0f} MiB (params/state in {memory['argument']:.0f}"
         f", temporaries {memory['temp']:.0f})" if memory else "")
  print(f"cmjax: train step compiled in {compile_seconds:.1f}s; {jax.device_count()} device(s), "
        f"global batch {bsz}, {config.train.precision}{mem}")
  batches = source.iterate(position)
  try:
    extra_meta = {"teacher": meta["teacher"]} if "teacher" in meta else {}
    out = _steps(run, state, step_fn, batches, train_key, start, prior_seconds, skipped, ckpt,
                 writer, cfg_json, workdir, is_main, extra_meta)
  finally:
    batches.close()
  return None if out is None else (*out, compile_seconds, skipped[0], memory)


def _steps(run: Run, state, step_fn, batches, train_key, start: int, prior_seconds: float,
           skipped: list, ckpt, writer, cfg_json: dict, workdir: str, is_main: bool,
           extra_meta: dict):
  """The loop of `_train_loop`: (state, train_seconds), or None when preempted."""
  config = run.config
  num_steps, bsz = run.num_steps, config.train.batch_size
  live = {"img_s": "-"}  # shown in the progress bar next to the loss
  t_loop = time.perf_counter()
  elapsed = lambda: prior_seconds + (time.perf_counter() - t_loop)
  t_last, n_last = t_loop, start
  pending = None  # metrics are fetched one step late, so logging never stalls the device
  with tqdm(total=num_steps, initial=start, desc="train", disable=not is_main,
            dynamic_ncols=True, mininterval=1.0) as pbar, \
      PreemptionGuard(check_every=config.train.preempt_check_every) as guard:
    report = lambda done, metrics: _report(done, metrics, writer, pbar, live, skipped, num_steps,
                                           config, ckpt)
    profile = profile_range(config.train.profile_steps)
    for step in range(start, num_steps):
      if profile and step == profile[0]:
        jax.profiler.start_trace(os.path.join(workdir, "profile"))
      batch = run.device_batch(next(batches))
      state, metrics = step_fn(state, batch, train_key)
      if profile and step + 1 == profile[1]:
        jax.block_until_ready(state)
        jax.profiler.stop_trace()
        print(f"cmjax: wrote a profiler trace of steps {profile[0]}..{profile[1] - 1} to "
              f"{os.path.join(workdir, 'profile')}")
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
      stop = guard.should_stop(done)
      if done % config.train.checkpoint_every == 0 or done == num_steps or stop:
        report(*pending)  # never checkpoint a state whose step was not finite
        pending = None
        ckpt.save(done, state, cfg_json, {"train_seconds": elapsed(), "images_seen": done * bsz,
                                          "data_position": done, "nonfinite_skipped": skipped[0],
                                          **extra_meta})
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
  return state, elapsed()


def profile_range(spec: str):
  """'A:B' -> (A, B) (steps A..B-1 traced), '' -> None (see train.profile_steps)."""
  if not spec:
    return None
  a, _, b = str(spec).partition(":")
  return int(a), int(b)


def _report(done: int, metrics, writer, pbar, live: dict, skipped: list, num_steps: int, config,
            ckpt) -> None:
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
  if done % config.train.log_every == 0 or done == num_steps:
    writer.scalars(done, {f"train/{k}": v for k, v in values.items()})
    pbar.set_postfix(loss=f"{values['loss']:.4f}", **live, refresh=False)
