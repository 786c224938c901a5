"""One writer per workdir: `WorkdirLock`, an O_EXCL lock file WORKDIR/.lock.

Two training launches on the same workdir would interleave checkpoints, summaries and event files
(and Orbax would delete each other's checkpoints past max_to_keep). The lock file is created
atomically (O_CREAT | O_EXCL) and holds JSON: host, pid, the process's start time (from /proc,
to tell a reused pid from the holder) and when the lock was taken.

- A second acquisition while the holder lives raises WorkdirLockedError (one line naming host and
  pid, and how to override).
- A stale lock (same host, the holding process is gone, e.g. after kill -9) is taken over with a
  warning on stderr.
- A lock held from another host cannot be checked: it is refused like a live one.
- force=True takes the lock over whatever holds it (with a warning).
Multi-host: only process 0 takes the lock (the other processes of the same run share the workdir
by design); they enter and leave the context without touching the file.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid

from cmjax.errors import WorkdirLockedError  # noqa: F401 - re-exported

LOCK_NAME = ".lock"


def _proc_start_ticks(pid: int) -> int | None:
  """The start time of process `pid` in clock ticks since boot (Linux /proc), or None."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return int(f.read().rsplit(")", 1)[1].split()[19])
  except (OSError, IndexError, ValueError):
    return None


def _alive(pid: int, start_ticks: int | None) -> bool:
  """Whether process `pid` (on this host) still runs and is the one that took the lock."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass
  now = _proc_start_ticks(pid)
  return start_ticks is None or now is None or now == start_ticks


class WorkdirLock:
  """Context manager: holds WORKDIR/.lock while the body runs (see the module docstring).

  Args:
    workdir: the run's directory (created if missing). force: take the lock over even from a
    live holder. process_index: this process's index (None: jax.process_index()); only 0 locks.
  """

  def __init__(self, workdir: str, force: bool = False, process_index: int | None = None):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.force = force
    self._process_index = process_index
    self._token = None

  def _record(self) -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "start_ticks": _proc_start_ticks(pid),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "token": uuid.uuid4().hex}

  def _read(self, path: str | None = None) -> dict:
    try:
      with open(path or self.path) as f:
        out = json.load(f)
      return out if isinstance(out, dict) else {}
    except (OSError, ValueError):
      return {}  # unreadable or half-written: treated as a lock of unknown origin

  def _create(self, rec: dict) -> bool:
    """Creates the lock file holding `rec`; False if one exists."""
    try:
      fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      json.dump(rec, f)
      f.flush()
      os.fsync(f.fileno())
    return True

  def _describe(self, held: dict) -> str:
    return (f"pid {held.get('pid', '?')} on host {held.get('host', '?')} "
            f"(since {held.get('started', '?')})")

  def _take_over(self, held: dict, why: str) -> bool:
    """Moves the lock file `held` was read from out of the way (atomically, only if it still
    is that one) and warns; False if another process changed the lock meanwhile."""
    aside = f"{self.path}.stale.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return True  # gone meanwhile: try to create it again
    if self._read(aside) != held:  # a new lock appeared between reading and renaming: put it back
      try:
        os.link(aside, self.path)
      except FileExistsError:
        pass
      os.remove(aside)
      return False
    os.remove(aside)
    print(f"cmjax: warning: {why}: took over the lock {self.path} of {self._describe(held)}",
          file=sys.stderr)
    return True

  def acquire(self) -> None:
    """Takes the lock (see the class docstring); WorkdirLockedError if a live run holds it."""
    if self._process_index is None:
      import jax
      self._process_index = jax.process_index()
    if self._process_index != 0:
      return
    os.makedirs(self.workdir, exist_ok=True)
    rec = self._record()
    for _ in range(10):
      if self._create(rec):
        self._token = rec["token"]
        return
      held = self._read()
      same_host = held.get("host") == rec["host"]
      pid = held.get("pid")
      if self.force:
        self._take_over(held, "force=True")
      elif same_host and isinstance(pid, int) and not _alive(pid, held.get("start_ticks")):
        self._take_over(held, f"stale lock (process {pid} is gone)")
      else:
        where = ("" if same_host else
                 "; it is on another host, so this one cannot tell whether it still runs")
        raise WorkdirLockedError(
            f"workdir {self.workdir} is in use by {self._describe(held)}{where}; wait for it or "
            f"stop it, or, if no run uses this workdir, delete {self.path} (or override the lock)")
    raise WorkdirLockedError(f"could not take the lock {self.path}: it keeps changing")

  def release(self) -> None:
    """Removes the lock file if it is still this process's."""
    if self._token is not None and self._read().get("token") == self._token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self._token = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()
