"""Train and evaluate a consistency model.

  python launch.py --config configs/digits_ect.py[:variant] [--config.a.b=v ...] --workdir DIR
  python launch.py --config configs/toy2d_cd.py --workdir DIR --mode trajectories   # after training
  python launch.py --config configs/digits_ect.py --workdir DIR --mode sample --config.sample.sigmas="(80.0,0.821)"
  python launch.py --config configs/digits_ect.py --workdir DIR --mode edit --config.edit.task=superres

Multi-host: run the same command on every host; JAX detects Cloud TPU pods and SLURM,
otherwise add --coordinator_address=HOST:PORT --num_processes=N --process_id=I.

Rerunning the same command resumes from DIR/checkpoints (and does nothing when the
run is complete). Bad input (unknown config key or method, batch size not divisible
by the device count, a workdir holding another config's checkpoint, ...) stops with
one line `cmjax: error: ...` and exit code 2, before anything is compiled.
"""
from __future__ import annotations

import ast
import os
import re
import sys

from absl import flags
from ml_collections import config_flags



def _parse(argv: list[str]):
  """Parses argv with fresh flag values (so main() can be called repeatedly in one process)."""
  fv = flags.FlagValues()
  saved_argv, sys.argv = sys.argv, list(argv)  # config_flags reads sys.argv to define overrides
  try:
    return _define_and_parse(fv, argv)
  finally:
    sys.argv = saved_argv


def _define_and_parse(fv, argv):
  config = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                           flag_values=fv, lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples, "
                                "summary.json.", flag_values=fv)
  flags.DEFINE_enum("mode", "train", ["train", "sample", "edit", "eval", "trajectories"],
                    "train (ends with the evaluation); sample (config.sample.*: samples of a "
                    "trained run, the t_mid search); edit (config.edit.*: inpainting, "
                    "colourisation, super-resolution, interpolation, SDEdit); eval (digits-FD or "
                    "2-D metrics, precision/recall, FID with eval.fid_weights; WORKDIR/eval.json); "
                    "trajectories "
                    "(toy2d_gmm8: exact PF-ODE trajectories and the trained model's f along them, "
                    "WORKDIR/trajectories.png).", flag_values=fv)
  flags.DEFINE_string("coordinator_address", None, "Multi-host: host:port of process 0.",
                      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Multi-host: number of processes.", flag_values=fv)
  flags.DEFINE_integer("process_id", None, "Multi-host: this process's index.", flag_values=fv)
  fv(argv)
  return config.value, workdir.value, fv.mode, (fv.coordinator_address, fv.num_processes,
                                                fv.process_id)


def _fail(msg: str) -> int:
  print(f"cmjax: error: {msg}", file=sys.stderr)
  return 2


def _last_line(e: BaseException) -> str:
  """One line from an exception's message (config_flags wraps and repr()s the cause)."""
  text = str(e).strip()
  while text[:1] in ("'", '"'):  # a repr()'d message, possibly nested
    try:
      text = str(ast.literal_eval(text)).strip()
    except (ValueError, SyntaxError):
      break
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  if not lines:
    return type(e).__name__
  if "Did you mean" in lines[-1] and len(lines) > 1:  # "'key'" then "Did you mean ...?"
    return " ".join(lines[-2:])
  return re.sub(r"^[A-Za-z]*Error: ", "", lines[-1])


def main(argv: list[str]) -> int:
  """Parses flags from argv (argv[0] is the program name) and runs; returns the exit code."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs/ import their base
  try:
    config, workdir, mode, cluster = _parse(argv)
    if config is not None:
      config.to_dict()  # a config file that failed to load raises here
  except OSError as e:
    return _fail(f"cannot load the config file: {_last_line(e)}")
  except Exception as e:  # flags errors, unknown override keys, a bad variant or value
    msg = _last_line(e)
    unknown = re.search(r"Unknown command line flag 'config\.([^']+)'", msg)
    if unknown:
      msg = f"unknown config key '{unknown.group(1)}'"
    elif "Did you mean" in msg or isinstance(e, KeyError):
      msg = "unknown config key " + msg
    return _fail(msg)
  if config is None:
    return _fail("--config is required, e.g. --config configs/digits_ect.py")
  if not workdir:
    return _fail("--workdir is required")

  from cmjax import distributed
  from cmjax.checkpointing import CheckpointSaveError
  from cmjax.config_validation import ConfigError
  from cmjax.trainer import train_and_evaluate, trajectories

  try:
    distributed.initialize(*cluster)  # before any other JAX call
  except ValueError as e:
    return _fail(str(e))
  try:
    if mode == "trajectories":
      trajectories(config, workdir)
    elif mode == "sample":
      from cmjax.sample_mode import sample
      sample(config, workdir)
    elif mode == "edit":
      from cmjax.edit_mode import edit
      edit(config, workdir)
    elif mode == "eval":
      from cmjax.eval_mode import evaluate
      evaluate(config, workdir)
    else:
      train_and_evaluate(config, workdir)
  except ConfigError as e:
    return _fail(str(e))
  except (FloatingPointError, CheckpointSaveError) as e:  # the message names what is kept
    print(f"cmjax: error: {e}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
