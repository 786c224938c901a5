"""The command line: `cmjax` (console script) and `python launch.py` are the same program.

  cmjax --config digits_ect --workdir runs/digits_ect            # a packaged config by name
  cmjax --config path/to/my_config.py:variant --workdir DIR       # or any config file
  cmjax --config digits_ect --workdir DIR --mode sample --config.sample.sigmas="(80.0,0.821)"
  cmjax --help                                                    # flags, modes, packaged configs

Rerunning the same command resumes from DIR/checkpoints (and does nothing when the run is
complete). Bad input (unknown config key or method, batch size not divisible by the device count,
a workdir holding another config's checkpoint, ...) stops with one line `cmjax: error: ...` and
exit code 2, before anything is compiled.

Multi-host: run the same command on every host; JAX detects Cloud TPU pods and SLURM, otherwise
add --coordinator_address=HOST:PORT --num_processes=N --process_id=I (--init_timeout=SECONDS:
how long the processes wait for each other at start-up, default 300).

Every failure is one line `cmjax: error: ...` (docs/faults.md): exit 2 for bad input, 1 for a
run-time failure, 130 for Ctrl-C; never a Python traceback on the terminal.
"""
from __future__ import annotations

import ast
import os
import re
import signal
import sys
import threading

from absl import flags
from ml_collections import config_flags

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
MODES = {
    "train": "train (or resume), then evaluate; WORKDIR/summary.json",
    "sample": "samples of a trained run with config.sample.* (any noise levels, the t_mid search)",
    "edit": "zero-shot editing with config.edit.* (inpaint, colorize, superres, interpolate, sdedit)",
    "eval": "digits-FD or 2-D metrics, precision/recall, FID with eval.fid_weights; WORKDIR/eval.json",
    "trajectories": "toy2d_gmm8: exact PF-ODE trajectories and the model's f along them",
    "encode": "images -> the VAE latent data set of data.name='latent' with config.encode.* (once)",
}
_MULTIHOST = {"coordinator_address": "Multi-host: host:port of process 0.",
              "num_processes": "Multi-host: number of processes.",
              "process_id": "Multi-host: this process's index.",
              "init_timeout": "Multi-host: seconds to wait for all processes at start-up."}


def packaged_configs() -> list[str]:
  """Names of the configs shipped in cmjax/configs (usable as --config NAME)."""
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_") and not f.endswith("_base.py"))


def resolve_config_arg(value: str) -> str:
  """--config NAME[:variant] -> the packaged file's path[:variant]; paths are left as they are."""
  name, sep, variant = value.partition(":")
  if os.sep in name or name.endswith(".py") or os.path.exists(name):
    return value
  path = os.path.join(CONFIG_DIR, name + ".py")
  return path + sep + variant if os.path.isfile(path) else value


def _resolve_argv(argv: list[str]) -> list[str]:
  out, i = [], 0
  while i < len(argv):
    a = argv[i]
    if a == "--config" and i + 1 < len(argv):
      out += [a, resolve_config_arg(argv[i + 1])]
      i += 2
      continue
    if a.startswith("--config="):
      a = "--config=" + resolve_config_arg(a[len("--config="):])
    out.append(a)
    i += 1
  return out


def help_text() -> str:
  """What --help prints: usage, flags, modes and the packaged configs."""
  lines = [__doc__.strip(), "", "Flags:",
           "  --config NAME[:variant] | FILE.py[:variant]   the run's config (required)",
           "  --config.SECTION.FIELD=VALUE                  override one config field",
           "  --workdir DIR                                 checkpoints, logs, samples (required)",
           "  --mode MODE                                   one of the modes below (default train)"]
  lines += [f"  --{k:<44}{v}" for k, v in _MULTIHOST.items()]
  lines += ["", "Modes:"] + [f"  {k:<13} {v}" for k, v in MODES.items()]
  lines += ["", "Packaged configs (variants such as ':smoke' are listed in each file):"]
  names = packaged_configs()
  lines += ["  " + ", ".join(names[i:i + 6]) for i in range(0, len(names), 6)]
  lines += ["", "Config fields and their meaning: cmjax/config_base.py (docs/config.md)."]
  return "\n".join(lines)


def _parse(argv: list[str]):
  """Parses argv with fresh flag values (so main() can be called repeatedly in one process)."""
  fv = flags.FlagValues()
  saved_argv, sys.argv = sys.argv, list(argv)  # config_flags reads sys.argv to define overrides
  try:
    config = config_flags.DEFINE_config_file("config", None, "Config file or name[:variant].",
                                             flag_values=fv, lock_config=True)
    workdir = flags.DEFINE_string("workdir", None, "Run directory.", flag_values=fv)
    flags.DEFINE_enum("mode", "train", list(MODES), "What to do.", flag_values=fv)
    flags.DEFINE_string("coordinator_address", None, _MULTIHOST["coordinator_address"], flag_values=fv)
    flags.DEFINE_integer("num_processes", None, _MULTIHOST["num_processes"], flag_values=fv)
    flags.DEFINE_integer("process_id", None, _MULTIHOST["process_id"], flag_values=fv)
    flags.DEFINE_integer("init_timeout", 300, _MULTIHOST["init_timeout"], lower_bound=1,
                         flag_values=fv)
    fv(argv)
    return config.value, workdir.value, fv.mode, (fv.coordinator_address, fv.num_processes,
                                                  fv.process_id, fv.init_timeout)
  finally:
    sys.argv = saved_argv


def configure_compile_cache(setting: str):
  """train.compile_cache: JAX's persistent compilation cache, so a resumed or repeated run loads
  its compiled step instead of compiling it again. 'auto' = $CMJAX_COMPILE_CACHE or
  ~/.cache/cmjax/xla; '' = off. A cache JAX already has (the tests', a user's) is kept.
  Returns the directory in use (None: off)."""
  import jax

  current = jax.config.jax_compilation_cache_dir
  if current or not setting:
    return current or None
  path = setting
  if setting == "auto":
    path = os.environ.get("CMJAX_COMPILE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "cmjax", "xla")
  jax.config.update("jax_compilation_cache_dir", path)
  return path


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
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:
    return type(e).__name__
  if "Did you mean" in lines[-1] and len(lines) > 1:  # "'key'" then "Did you mean ...?"
    return " ".join(lines[-2:])
  return re.sub(r"^[A-Za-z]*Error: ", "", lines[-1])


def _flag_error(e: BaseException) -> str:
  msg = _last_line(e)
  unknown = re.search(r"Unknown command line flag '([^']+)'", msg)
  if unknown and unknown.group(1).startswith("config."):
    return f"unknown config key '{unknown.group(1)[len('config.'):]}'"
  if unknown:
    return f"unknown flag '--{unknown.group(1)}' (see --help)"
  if "Did you mean" in msg or isinstance(e, KeyError):
    return "unknown config key " + msg
  return msg


_VIRTUAL_FS = ("/proc", "/sys", "/dev")


def check_workdir(workdir: str, mode: str) -> None:
  """Raises ConfigError (one line) for a WORKDIR that cannot hold a run: a regular file, a path
  below a regular file, a path on a virtual file system (/proc, /sys, /dev), or (for training) a
  path whose nearest existing folder is not writable. Creates nothing."""
  from cmjax.errors import ConfigError
  path = os.path.realpath(os.path.abspath(workdir))
  for root in _VIRTUAL_FS:
    if path == root or path.startswith(root + os.sep):
      raise ConfigError(f"--workdir {workdir} is on the virtual file system {root}; choose a "
                        f"folder on a disk")
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir {workdir} is a file, not a folder; choose another --workdir")
  parent = path
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ConfigError(f"--workdir {workdir} lies below the file {parent}; choose another --workdir")
  if mode == "train" and not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir {workdir}: the folder {parent} is not writable")


class _OrbaxErrorFilter:
  """A logging filter that drops the ERROR records Orbax and absl log while a checkpoint save
  fails (hundreds of lines of tracebacks, once per background thread): the failure surfaces as
  one CheckpointSaveError line instead. Warnings and other loggers are untouched."""

  def filter(self, record) -> bool:
    if record.levelno < 40:
      return True
    where = (record.name or "") + " " + (getattr(record, "pathname", "") or "")
    return not any(k in where for k in ("orbax", "tensorstore", "absl"))


def _quiet_orbax_errors():
  """Installs `_OrbaxErrorFilter` on the root and absl handlers (idempotent); returns an undo."""
  import logging
  filt = _OrbaxErrorFilter()
  handlers = list(logging.getLogger().handlers)
  try:
    from absl import logging as absl_logging
    handlers.append(absl_logging.get_absl_handler())
  except Exception:  # noqa: BLE001 - absl is a dependency of ml_collections; best effort
    pass
  loggers = [logging.getLogger(n) for n in ("absl", "orbax", "orbax.checkpoint")]
  for h in handlers + loggers:
    h.addFilter(filt)

  def undo():
    for h in handlers + loggers:
      h.removeFilter(filt)
  return undo


def _save_traceback(workdir: str | None) -> str:
  """Writes the current exception's traceback to WORKDIR/cmjax_error.txt (or a temporary file
  when the workdir cannot be written); returns the path."""
  import tempfile
  import traceback
  text = traceback.format_exc()
  if workdir and os.path.isdir(workdir):
    path = os.path.join(workdir, "cmjax_error.txt")
    try:
      with open(path, "w") as f:
        f.write(text)
      return path
    except OSError:
      pass
  fd, path = tempfile.mkstemp(prefix="cmjax_error_", suffix=".txt")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return path


def main(argv: list[str], *, hard_exit_on_interrupt: bool | None = None) -> int:
  """Parses flags from argv (argv[0] is the program name) and runs; returns the exit code.

  Exit codes: 0 done; 2 bad input (one line `cmjax: error: ...`, before compiling where it can be
  seen that early); 1 a run-time failure (a failed save, a non-finite loss, an unexpected error:
  one line, the traceback saved to a file it names); 130 interrupted by Ctrl-C (one line). After
  Ctrl-C the process leaves with os._exit (no interpreter teardown, which can crash while XLA
  threads are compiling) when `hard_exit_on_interrupt` is true; None means "when argv is
  sys.argv" (launch.py and the console script; in-process callers get 130 back)."""
  if hard_exit_on_interrupt is None:
    hard_exit_on_interrupt = argv is sys.argv
  workdir = [None]
  previous = None
  if hard_exit_on_interrupt and threading.current_thread() is threading.main_thread():
    # Python's own handler raises KeyboardInterrupt wherever the interpreter is, e.g. inside a
    # gc callback of XLA's, where it is swallowed and the run goes on; exit at once instead.
    # The training loop's PreemptionGuard replaces this handler while steps run (it saves first).
    previous = signal.signal(signal.SIGINT, lambda *_: _interrupted(True))
  try:
    return _main(argv, workdir)
  except KeyboardInterrupt:
    return _interrupted(hard_exit_on_interrupt)
  except BrokenPipeError:  # `cmjax --help | head`: the reader left; not an error of the run
    try:
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    except (OSError, ValueError, AttributeError):
      pass
    return 0
  except Exception as e:  # noqa: BLE001 - the last net: one line, the traceback in a file
    where = _save_traceback(workdir[0])
    msg = " ".join(str(e).split())[:300]
    print(f"cmjax: error: unexpected {type(e).__name__}: {msg} (the traceback is in {where}; "
          f"please report it)", file=sys.stderr)
    return 1
  finally:
    if previous is not None:
      signal.signal(signal.SIGINT, previous)


def _interrupted(hard_exit: bool) -> int:
  """Ctrl-C: one line; with hard_exit the process ends here with status 130 (os._exit: no
  interpreter teardown, which can crash while XLA threads compile)."""
  print("cmjax: error: interrupted (Ctrl-C); checkpoints already written are kept, rerun the "
        "same command to resume", file=sys.stderr)
  if hard_exit:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
  return 130


def _main(argv: list[str], workdir_out: list) -> int:
  if any(a in ("--help", "-h", "--helpfull", "-help") for a in argv[1:]):
    print(help_text())
    return 0
  argv = _resolve_argv(list(argv))
  try:
    config, workdir, mode, cluster = _parse(argv)
    if config is not None:
      if not hasattr(config, "to_dict"):
        return _fail("the config file's get_config() returned "
                     f"{type(config).__name__}, not a ConfigDict")
      config.to_dict()  # a config file that failed to load raises here
  except OSError as e:
    return _fail(f"cannot load the config file: {_last_line(e)}")
  except Exception as e:  # flags errors, unknown override keys, a bad variant or value
    return _fail(_flag_error(e))
  if config is None:
    return _fail("--config is required, e.g. --config digits_ect (see --help)")
  if not workdir:
    return _fail("--workdir is required")

  from cmjax.errors import CheckpointSaveError, ConfigError
  try:
    check_workdir(workdir, mode)
  except ConfigError as e:
    return _fail(str(e))
  workdir_out[0] = os.path.abspath(workdir)

  from cmjax import distributed
  try:
    distributed.initialize(*cluster)  # before any other JAX call
  except ValueError as e:
    return _fail(str(e))
  except distributed.InitializationError as e:
    print(f"cmjax: error: {e}", file=sys.stderr)
    return 1
  configure_compile_cache(config.train.get("compile_cache", "auto"))  # before anything compiles
  undo = _quiet_orbax_errors()
  try:
    if mode == "trajectories":
      from cmjax.modes.trajectories import trajectories
      trajectories(config, workdir)
    elif mode == "sample":
      from cmjax.modes.sample import sample
      sample(config, workdir)
    elif mode == "edit":
      from cmjax.modes.edit import edit
      edit(config, workdir)
    elif mode == "eval":
      from cmjax.modes.evaluate import evaluate
      evaluate(config, workdir)
    elif mode == "encode":
      from cmjax.modes.encode import encode
      encode(config, workdir)
    else:
      from cmjax.trainer import train_and_evaluate
      train_and_evaluate(config, workdir)
  except ConfigError as e:
    return _fail(str(e))
  except (FloatingPointError, CheckpointSaveError) as e:  # the message names what is kept
    print(f"cmjax: error: {e}", file=sys.stderr)
    return 1
  finally:
    undo()
  return 0


def console_main() -> None:
  """Entry point of the `cmjax` console script."""
  sys.exit(main(sys.argv))


if __name__ == "__main__":  # python -m cmjax.cli ... (as the console script)
  console_main()
