"""Faults: non-finite steps, preemption (SIGTERM) and kill -9, with real subprocesses."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import launch
from cmjax import checkpointing
from cmjax.data import ArraySource
from _helpers import restore_latest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", "configs/digits_ect.py:smoke", "--config.eval.at_end=False"]  # faults, not quality


def _nan_at(step_to_poison):
  original = ArraySource.batch

  def batch(self, step):
    out = original(self, step)
    if step == step_to_poison:
      out = {"image": np.full_like(out["image"], np.nan)}
    return out

  return batch


@pytest.mark.slow
def test_nonfinite_step_stops_and_names_last_good_checkpoint(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(ArraySource, "batch", _nan_at(3))
  rc = launch.main(["launch.py", *SMOKE, "--config.train.num_steps=6", "--workdir", str(tmp_path)])
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("cmjax:")]  # not tqdm's
  assert rc == 1 and len(err) == 1, err
  assert "non-finite loss or gradient at step 3" in err[0] and "loss=nan" in err[0]
  assert "last good checkpoint: step 2" in err[0]
  # The poisoned state (step 4) was never written.
  assert checkpointing.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [2]


@pytest.mark.slow
def test_nonfinite_step_skipped_and_counted(tmp_path, monkeypatch):
  monkeypatch.setattr(ArraySource, "batch", _nan_at(1))
  rc = launch.main(["launch.py", *SMOKE, "--config.train.num_steps=4", "--config.eval.at_end=True",
                    "--config.train.skip_nonfinite=True", "--workdir", str(tmp_path)])
  assert rc == 0
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["nonfinite_skipped"] == 1 and np.isfinite(summary["fd_digits_1step"])


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = os.environ["XLA_FLAGS"]  # same flags as this process: compile-cache hits
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _start(workdir, *extra):
  return subprocess.Popen([sys.executable, "launch.py", *SMOKE, "--workdir", str(workdir), *extra],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _wait_for_checkpoint(proc, workdir, min_step, timeout=240):
  ckdir = workdir / "checkpoints"
  t0 = time.time()
  while time.time() - t0 < timeout:
    steps = [int(d) for d in os.listdir(ckdir) if d.isdigit()] if ckdir.exists() else []
    if steps and max(steps) >= min_step:
      return max(steps)
    assert proc.poll() is None, proc.communicate()[0]
    time.sleep(0.2)
  proc.kill()
  raise AssertionError("no checkpoint appeared in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.long)])
def test_sigterm_saves_and_exits_zero_then_resumes(tmp_path, sig):
  """SIGTERM (the preemption signal of TPU VMs and Kubernetes) end to end; SIGINT takes the same
  path (the guard's handling of both: test_run_options.py), so its launch is in the long tier."""
  proc = _start(tmp_path, "--config.train.num_steps=100000", "--config.train.checkpoint_every=2")
  _wait_for_checkpoint(proc, tmp_path, 2)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert f"received {sig.name}" in out
  saved = checkpointing.Checkpointer(str(tmp_path / "checkpoints")).latest_step()
  assert saved >= 2 and not (tmp_path / "summary.json").exists()
  # The next launch resumes from there.
  rc = launch.main(["launch.py", *SMOKE, f"--config.train.num_steps={saved + 2}",
                    "--config.train.checkpoint_every=2", "--workdir", str(tmp_path)])
  assert rc == 0 and json.load(open(tmp_path / "summary.json"))["steps"] == saved + 2


@pytest.mark.slow
def test_kill_minus_9_then_relaunch_is_bit_identical(tmp_path):
  a, b = tmp_path / "a", tmp_path / "b"
  args = ["--config.train.num_steps=12", "--config.train.checkpoint_every=3"]
  proc = _start(a, *args)
  _wait_for_checkpoint(proc, a, 3)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert launch.main(["launch.py", *SMOKE, *args, "--workdir", str(a)]) == 0
  assert launch.main(["launch.py", *SMOKE, *args, "--workdir", str(b)]) == 0
  (sa, _), (sb, _) = restore_latest(a), restore_latest(b)
  assert int(sa.step) == int(sb.step) == 12
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
  args = ["launch.py", *SMOKE, "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
          "--workdir", str(tmp_path)]
  assert launch.main(args) == 0
  # Truncate every data file of checkpoint 4's state to half its size.
  state_dir = tmp_path / "checkpoints" / "4" / "state"
  files = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs]
  assert files
  for f in files:
    size = os.path.getsize(f)
    with open(f, "r+b") as fh:
      fh.truncate(size // 2)
  os.remove(tmp_path / "summary.json")
  # ... and a newer, half-written checkpoint directory (no data, no commit marker).
  os.makedirs(tmp_path / "checkpoints" / "6" / "state")
  capsys.readouterr()
  assert launch.main(args) == 0
  captured = capsys.readouterr()
  assert "checkpoint 4" in captured.err and "cannot be restored" in captured.err
  assert "resumed from" in captured.out and "at step 2" in captured.out
  assert (tmp_path / "checkpoints" / "4.unreadable").is_dir()   # set aside, not deleted
  assert "checkpoint 6" in captured.err and (tmp_path / "checkpoints" / "6.unreadable").is_dir()
  assert checkpointing.Checkpointer(str(tmp_path / "checkpoints")).all_steps() == [2, 4]
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["steps"] == 4  # eval.at_end=False: no quality metrics, no sample grids
  assert "fd_digits_1step" not in summary and not (tmp_path / "samples_1step.png").exists()


def _dir_kib(path) -> int:
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs) // 1024


@pytest.mark.slow
def test_disk_full_is_one_clear_error_and_keeps_previous_checkpoints(tmp_path, capsys):
  """A real ENOSPC: WORKDIR/checkpoints is a tmpfs; after checkpoint 2 it is filled up."""
  args = [*SMOKE, "--config.train.checkpoint_every=2", "--workdir", str(tmp_path)]
  ckdir = tmp_path / "checkpoints"
  ckdir.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(ckdir)],
                           capture_output=True).returncode == 0
  if not mounted:
    pytest.skip("mounting a small tmpfs needs root")
  try:
    assert launch.main(["launch.py", *args, "--config.train.num_steps=2"]) == 0
    size = _dir_kib(ckdir / "2") * 1024
    st = os.statvfs(ckdir)
    with open(ckdir / "filler", "wb") as f:  # leave a quarter of a checkpoint free
      f.write(b"\0" * (st.f_bavail * st.f_frsize - size // 4))
    capsys.readouterr()
    rc = launch.main(["launch.py", *args, "--config.train.num_steps=6"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("cmjax:")]
    assert rc == 1 and len(err) == 1, err
    assert "writing checkpoint 4" in err[0] and "kept: [2]" in err[0]
    assert "disk full (ENOSPC)" in err[0]
    ck = checkpointing.Checkpointer(str(ckdir))
    assert ck.all_steps() == [2]
    assert ck.read_config(2)["train"]["checkpoint_every"] == 2   # still readable
    ck.close()
  finally:
    subprocess.run(["umount", str(ckdir)], capture_output=True)
