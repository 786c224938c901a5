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


class CheckpointCorruptError(ConfigError):
  """A checkpoint's arrays do not match the checksums written with them, or hold non-finite
  values: it is set aside like an unreadable one."""


class CheckpointMismatchError(ConfigError):
  """A checkpoint whose saved tree (structure or shapes) does not fit the state this run
  restores into, e.g. a CD student whose teacher directory now holds another backbone. Nothing
  on disk is changed."""


class NoReadableCheckpointError(ConfigError):
  """Checkpoints exist but none can be restored (each was set aside as `<step>.unreadable`)."""


class WeightsFileError(ConfigError):
  """A weights file that cannot be read (truncated, corrupt, unsafe, unknown layout)."""


class WorkdirLockedError(ConfigError):
  """Another live run holds the workdir's lock (`cmjax.workdir_lock`): one line naming its host
  and pid, and how to override."""
