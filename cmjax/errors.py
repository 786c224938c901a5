"""The errors cmjax raises for problems a user can fix. Each message is one line naming the problem;
`launch.py` prints it as `cmjax: error: ...` and exits non-zero, before anything is compiled where
the problem can be seen that early. One module, so no other module imports another just for an
error class."""
from __future__ import annotations


class ConfigError(ValueError):
  """A config problem; its message is one line naming the problem."""


class DataError(ConfigError):
  """A data set that cannot be read as configured (missing, unprepared, corrupt file)."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (disk full, no permission, ...)."""
