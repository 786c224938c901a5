"""Run outputs: TensorBoard scalars (tensorboardX, no TensorFlow) and atomic JSON files."""
from __future__ import annotations

import json
import os

from cmjax.errors import ConfigError


class ScalarWriter:
  """TensorBoard event files in `logdir` on process 0; a no-op elsewhere."""

  def __init__(self, logdir: str, enabled: bool = True):
    self._writer = None
    if enabled:
      from tensorboardX import SummaryWriter
      self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

  def scalars(self, step: int, values: dict) -> None:
    if self._writer is not None:
      for k, v in values.items():
        self._writer.add_scalar(k, float(v), step)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


def write_json_atomic(path: str, obj) -> None:
  """Writes JSON to path.tmp then renames, so readers never see a half-written file."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json_of_type(path: str, kind: type, what: str):
  """The JSON value in `path`, which must be a `kind` (dict, list). ConfigError (one line)
  otherwise: `what` is the message with a '{}' where the reason goes (the file is never
  overwritten: a hand-edited or foreign file is the user's to move)."""
  try:
    with open(path) as f:
      out = json.load(f)
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ConfigError(what.format(f"{type(e).__name__}: {' '.join(str(e).split())[:120]}")) from None
  if not isinstance(out, kind):
    raise ConfigError(what.format(f"it holds a JSON {type(out).__name__}, not a {kind.__name__}"))
  return out
