"""`cmjax.workdir_lock.WorkdirLock`: one writer per workdir, with a real second process holding it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from cmjax.workdir_lock import WorkdirLock, WorkdirLockedError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from cmjax.workdir_lock import WorkdirLock
with WorkdirLock({workdir!r}, process_index=0):
  print("held", flush=True)
  time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
  """A subprocess holding tmp_path/w's lock; yields (proc, workdir)."""
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=ROOT, workdir=workdir)],
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  yield proc, workdir
  if proc.poll() is None:
    proc.kill()
  proc.wait(timeout=30)


def test_second_acquisition_refused_naming_holder(holder):
  proc, workdir = holder
  rec = json.load(open(os.path.join(workdir, ".lock")))
  assert rec["pid"] == proc.pid and rec["host"] == socket.gethostname()
  with pytest.raises(WorkdirLockedError) as e:
    with WorkdirLock(workdir, process_index=0):
      pass
  msg = str(e.value)
  assert "\n" not in msg and f"pid {proc.pid}" in msg and socket.gethostname() in msg
  assert "delete" in msg and ".lock" in msg
  assert json.load(open(os.path.join(workdir, ".lock")))["pid"] == proc.pid  # untouched


def test_stale_lock_after_kill_9_is_taken_over_with_warning(holder, capsys):
  proc, workdir = holder
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=30)
  assert os.path.exists(os.path.join(workdir, ".lock"))  # kill -9 left it behind
  with WorkdirLock(workdir, process_index=0) as lock:
    assert json.load(open(lock.path))["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"stale lock (process {proc.pid} is gone)" in err
  assert not os.path.exists(os.path.join(workdir, ".lock"))  # released on exit


def test_force_overrides_a_live_holder(holder, capsys):
  proc, workdir = holder
  with WorkdirLock(workdir, force=True, process_index=0) as lock:
    assert json.load(open(lock.path))["pid"] == os.getpid()
  assert "force=True" in capsys.readouterr().err and proc.poll() is None


def test_lock_from_another_host_is_refused_and_other_processes_do_not_lock(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / ".lock").write_text(json.dumps({"host": "elsewhere-42", "pid": 999999999}))
  with pytest.raises(WorkdirLockedError, match="pid 999999999 on host elsewhere-42.*another host"):
    WorkdirLock(str(workdir), process_index=0).acquire()
  other = tmp_path / "v"
  with WorkdirLock(str(other), process_index=1):
    assert not (other / ".lock").exists()  # multi-host: only process 0 takes it
  with WorkdirLock(str(other), process_index=0):
    assert (other / ".lock").exists()
  assert not (other / ".lock").exists()
