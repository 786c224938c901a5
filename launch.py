"""Train and evaluate a consistency model.

  python launch.py --config configs/digits_ect.py[:variant] [--config.a.b=v ...] --workdir DIR

Rerunning the same command resumes from DIR/checkpoints (and does nothing when the
run is complete). Bad input (unknown config key or method, batch size not divisible
by the device count, a workdir holding another config's checkpoint, ...) stops with
one line `cmjax: error: ...` and exit code 2, before anything is compiled.
"""
from __future__ import annotations

import os
import sys

from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs, samples, summary.json.")
_MODE = flags.DEFINE_enum("mode", "train", ["train"], "What to do (train includes the final evaluation).")


def _fail(msg: str) -> int:
  print(f"cmjax: error: {msg}", file=sys.stderr)
  return 2


def main(argv: list[str]) -> int:
  """Parses flags from argv (argv[0] is the program name) and runs; returns the exit code."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # configs/ import their base
  try:
    flags.FLAGS(argv)
  except (flags.Error, KeyError, AttributeError, ValueError, TypeError, FileNotFoundError) as e:
    return _fail(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
  finally:
    pass
  if _CONFIG.value is None:
    return _fail("--config is required, e.g. --config configs/digits_ect.py")
  if not _WORKDIR.value:
    return _fail("--workdir is required")

  from cmjax.config_validation import ConfigError
  from cmjax.trainer import train_and_evaluate

  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except ConfigError as e:
    return _fail(str(e))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
