"""Checkpoint integrity (`cmjax.checkpointing`): a failed save does not hang the process, a
damaged checkpoint is never restored silently, a good one is never thrown away for a mismatch.

Every check here fails on the checkpointing module as it was before: a failed save left Orbax's
non-daemon threads waiting 300 s (the launch printed its error and did not exit); flipped bytes
in a tensor file were restored as they were; a shape mismatch renamed a good checkpoint
`.unreadable` and restore_newest returned None (training restarted from step 0).
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cmjax import checkpointing, parallel
from cmjax.errors import (CheckpointCorruptError, CheckpointMismatchError, CheckpointSaveError,
                          ConfigError, NoReadableCheckpointError)

# A cancelled save's coroutines are dropped on purpose (checkpointing.abort_background_saves).
pytestmark = pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", "configs/digits_ect.py:smoke", "--config.eval.at_end=False"]  # files, not quality


def _state(v: int):
  """A small replicated state: 'ids' (64, 64) int32 of random bits (its file is the largest),
  'w' (8,) float32 = v, 'step' = v."""
  rep = parallel.replicated(parallel.make_data_mesh())
  ids = np.random.default_rng(v).integers(-2**31, 2**31 - 1, (64, 64), dtype=np.int64)
  return jax.device_put({"ids": jnp.asarray(ids.astype(np.int32)),
                         "w": jnp.full((8,), float(v), jnp.float32),
                         "step": jnp.int32(v)}, rep)


def _abstract(state):
  rep = parallel.replicated(parallel.make_data_mesh())
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), state)


def _flip_64_bytes_of_largest_tensor_file(step_dir):
  """XORs 64 bytes in the middle of the largest data file of the checkpoint's state: with
  `_state` that is the incompressible 'ids' array, so it reads back without error, wrong."""
  files = [os.path.join(r, f) for r, _, fs in os.walk(os.path.join(step_dir, "state"))
           for f in fs if os.sep + "d" + os.sep in os.path.join(r, f)]
  big = max(files, key=os.path.getsize)
  at = os.path.getsize(big) // 2
  with open(big, "r+b") as f:
    f.seek(at)
    data = f.read(64)
    f.seek(at)
    f.write(bytes(b ^ 0x5A for b in data))


def _two_checkpoints(directory):
  ck = checkpointing.Checkpointer(str(directory))
  s1, s2 = _state(1), _state(2)
  ck.save(1, s1, {"c": 1}, {"m": 1})
  ck.save(2, s2, {"c": 1}, {"m": 2})
  ck.close()
  return s1, s2


def _leaves_equal(a, b) -> bool:
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _orbax_threads():
  return [t for t in threading.enumerate() if t.is_alive() and not t.daemon
          and t is not threading.main_thread()]


# --- 1. a failed save does not hang -------------------------------------------------------------

def test_failed_save_cancels_orbax_threads(tmp_path):
  """The checkpoint directory is a regular file (root cannot write into it either)."""
  (tmp_path / "ck").write_text("x")
  ck = checkpointing.Checkpointer(str(tmp_path / "ck"))
  with pytest.raises(CheckpointSaveError, match="writing checkpoint 2 .* failed"):
    ck.save(2, _state(2), {}, {})
    ck.wait()
  t0 = time.time()
  ck.close()  # reported already: no second error, no wait
  while _orbax_threads() and time.time() - t0 < 10:
    time.sleep(0.1)
  assert not _orbax_threads(), [t.name for t in _orbax_threads()]


def test_checkpoint_directory_under_a_regular_file_is_one_line(tmp_path):
  (tmp_path / "ck").write_text("x")
  with pytest.raises(CheckpointSaveError, match="cannot use .*/ck/sub for checkpoints"):
    checkpointing.Checkpointer(str(tmp_path / "ck" / "sub"))


def _env():
  env = dict(os.environ)
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _launch_until_exit(workdir, *extra, timeout=240):
  """Runs launch.py in a subprocess; returns (rc, output, seconds from its 'cmjax: error' line
  to its exit)."""
  proc = subprocess.Popen([sys.executable, "launch.py", *SMOKE, "--workdir", str(workdir), *extra],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  lines, t_err, t0 = [], None, time.time()
  for line in proc.stdout:  # the error line comes before the exit
    lines.append(line)
    if line.startswith("cmjax: error:") and t_err is None:
      t_err = time.time()
      break
    if time.time() - t0 > timeout:
      break
  try:
    proc.wait(timeout=60)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    return None, "".join(lines), None
  lines += proc.stdout.readlines()
  return proc.returncode, "".join(lines), (time.time() - t_err) if t_err else None


@pytest.mark.slow
def test_launch_with_checkpoints_a_regular_file_exits_1_within_seconds(tmp_path):
  (tmp_path / "checkpoints").write_text("in the way")
  rc, out, secs = _launch_until_exit(tmp_path, "--config.train.num_steps=2")
  errs = [l for l in out.splitlines() if l.startswith("cmjax: error")]
  assert rc == 1 and len(errs) == 1, out[-3000:]
  assert "writing checkpoint 2" in errs[0] and "kept: []" in errs[0]
  assert secs is not None and secs < 20, secs  # before: ~300 s (Orbax's coordination timeout)


@pytest.mark.slow
def test_launch_with_immutable_checkpoint_dir_exits_1_and_keeps_checkpoints(tmp_path):
  """`chattr +i` on WORKDIR/checkpoints: not even root can add to it; checkpoint 2 stays."""
  import launch

  args = ["--config.train.checkpoint_every=2"]
  assert launch.main(["launch.py", *SMOKE, "--workdir", str(tmp_path), *args,
                      "--config.train.num_steps=2"]) == 0
  os.remove(tmp_path / "summary.json")
  ckdir = tmp_path / "checkpoints"
  if subprocess.run(["chattr", "+i", str(ckdir)], capture_output=True).returncode != 0:
    pytest.skip("chattr +i needs root on a file system that supports it")
  try:
    rc, out, secs = _launch_until_exit(tmp_path, *args, "--config.train.num_steps=4")
  finally:
    subprocess.run(["chattr", "-i", str(ckdir)], check=True)
  errs = [l for l in out.splitlines() if l.startswith("cmjax: error")]
  assert rc == 1 and len(errs) == 1, out[-3000:]
  assert "writing checkpoint 4" in errs[0] and "kept: [2]" in errs[0]
  assert secs is not None and secs < 20, secs
  ck = checkpointing.Checkpointer(str(ckdir))
  assert ck.all_steps() == [2] and ck.read_config(2)["train"]["checkpoint_every"] == 2
  ck.close()


# --- 2. a damaged checkpoint is not restored silently -------------------------------------------

def test_flipped_bytes_fail_the_checksum_and_the_older_checkpoint_is_restored(tmp_path, capsys):
  s1, _ = _two_checkpoints(tmp_path)
  _flip_64_bytes_of_largest_tensor_file(tmp_path / "2")
  ck = checkpointing.Checkpointer(str(tmp_path))
  step, state, meta = ck.restore_newest(_abstract(s1))
  ck.close()
  assert step == 1 and meta == {"m": 1} and _leaves_equal(state, s1)
  err = capsys.readouterr().err
  assert "checkpoint 2" in err and "array ids does not match the checksum" in err
  assert sorted(os.listdir(tmp_path)) == ["1", "2.unreadable"]


@pytest.mark.slow
def test_launch_resumes_from_the_older_checkpoint_when_the_newest_data_is_wrong(tmp_path, capsys):
  """Checkpoint 4's tensor data replaced by other readable data (checkpoint 2's): only the
  checksums can tell. Before: resumed 'at step 4' from step-2 arrays."""
  import json
  import shutil

  import launch

  args = ["launch.py", *SMOKE, "--config.train.num_steps=4", "--config.train.checkpoint_every=2",
          "--workdir", str(tmp_path)]
  assert launch.main(args) == 0
  ckdir = tmp_path / "checkpoints"
  shutil.rmtree(ckdir / "4" / "state")
  shutil.copytree(ckdir / "2" / "state", ckdir / "4" / "state")
  os.remove(tmp_path / "summary.json")
  capsys.readouterr()
  assert launch.main(args) == 0
  out = capsys.readouterr()
  assert "checkpoint 4" in out.err and "cannot be restored (CheckpointCorruptError" in out.err
  assert "does not match the checksum" in out.err
  assert "resumed from" in out.out and "at step 2" in out.out
  assert (ckdir / "4.unreadable").is_dir()
  assert json.load(open(tmp_path / "summary.json"))["steps"] == 4


def test_checksums_are_the_crc32_of_the_saved_bytes(tmp_path):
  """The stored record, checked against zlib.crc32 of each array by hand."""
  import json
  import zlib

  _two_checkpoints(tmp_path)
  files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "2" / "checksums") for f in fs
           if f != "commit_success.txt" and not f.startswith("_")]
  rec = json.load(open(files[0]))
  s2 = _state(2)
  assert rec["format"] == checkpointing.CHECKSUM_FORMAT
  assert set(rec["leaves"]) == {"ids", "w", "step"}
  for name in ("ids", "w", "step"):
    host = np.asarray(s2[name])
    assert rec["leaves"][name] == {"crc32": zlib.crc32(host.tobytes()), "shape": list(host.shape),
                                   "dtype": str(host.dtype)}


def test_nonfinite_leaf_is_refused_like_an_unreadable_checkpoint(tmp_path, capsys):
  ck = checkpointing.Checkpointer(str(tmp_path))
  s1 = _state(1)
  ck.save(1, s1, {}, {})
  bad = dict(_state(2), w=jax.device_put(jnp.array([0, 1, np.inf, 3, 4, 5, 6, 7], jnp.float32),
                                         s1["w"].sharding))
  ck.save(2, bad, {}, {})
  ck.close()
  ck = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(CheckpointCorruptError, match="checkpoint 2 .* array w holds non-finite"):
    ck.restore(2, _abstract(s1))   # by name (inference, teacher): a one-line ConfigError
  step, state, _ = ck.restore_newest(_abstract(s1))
  ck.close()
  assert step == 1 and _leaves_equal(state, s1)
  assert "array w holds non-finite values" in capsys.readouterr().err


def test_checkpoint_without_checksums_restores_with_one_warning(tmp_path, capsys):
  """Written as before this change (items state, config, meta only)."""
  s1 = _state(1)
  old = ocp.CheckpointManager(str(tmp_path), options=ocp.CheckpointManagerOptions(create=True),
                              item_names=("state", "config", "meta"))
  for step in (1, 2):
    old.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(s1),
                                           config=ocp.args.JsonSave({}), meta=ocp.args.JsonSave({})))
  old.wait_until_finished()
  old.close()
  ck = checkpointing.Checkpointer(str(tmp_path))
  step, state, _ = ck.restore_newest(_abstract(s1))
  ck.restore(1, _abstract(s1))
  ck.close()
  assert step == 2 and _leaves_equal(state, s1)
  assert capsys.readouterr().err.count("has no checksums") == 1


# --- 3. a good checkpoint is not thrown away for something else ----------------------------------

def test_shape_mismatch_is_one_line_and_changes_nothing_on_disk(tmp_path):
  s1, _ = _two_checkpoints(tmp_path)
  before = sorted(os.listdir(tmp_path))
  target = _abstract(s1)
  target["w"] = jax.ShapeDtypeStruct((16,), jnp.float32, sharding=target["w"].sharding)
  ck = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(CheckpointMismatchError) as e:
    ck.restore_newest(target)
  ck.close()
  msg = str(e.value)
  assert isinstance(e.value, ConfigError) and "\n" not in msg
  assert "checkpoint 2" in msg and "array w was saved with shape (8,)" in msg
  assert "expects (16,)" in msg
  assert sorted(os.listdir(tmp_path)) == before == ["1", "2"]


def test_extra_leaf_in_the_target_is_a_mismatch_naming_it(tmp_path):
  s1, _ = _two_checkpoints(tmp_path)
  target = dict(_abstract(s1), teacher=jax.ShapeDtypeStruct((3,), jnp.float32))
  ck = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(CheckpointMismatchError, match="array teacher was saved with shape absent"):
    ck.restore_newest(target)
  ck.close()
  assert sorted(os.listdir(tmp_path)) == ["1", "2"]


def test_none_restorable_raises_one_line_instead_of_none(tmp_path, capsys):
  s1, _ = _two_checkpoints(tmp_path)
  for step in ("1", "2"):
    _flip_64_bytes_of_largest_tensor_file(tmp_path / step)
  ck = checkpointing.Checkpointer(str(tmp_path))
  with pytest.raises(NoReadableCheckpointError) as e:
    ck.restore_newest(_abstract(s1))
  ck.close()
  assert isinstance(e.value, ConfigError) and "\n" not in str(e.value)
  assert "2: CheckpointCorruptError; 1: CheckpointCorruptError" in str(e.value)
  assert sorted(os.listdir(tmp_path)) == ["1.unreadable", "2.unreadable"]
  empty = checkpointing.Checkpointer(str(tmp_path / "none"))
  assert empty.restore_newest(_abstract(s1)) is None  # no checkpoint at all: None, as before
  empty.close()


@pytest.mark.slow
def test_cd_student_with_a_replaced_teacher_is_refused_and_kept(tmp_path, capsys):
  """The teacher's params are part of the student's TrainState: a teacher directory now holding
  another backbone is a one-line error (exit 2); the student's checkpoint stays as it was (it was
  renamed .unreadable and the student restarted from step 0 before)."""
  import launch

  t, t2, s = tmp_path / "T", tmp_path / "T2", tmp_path / "S"
  edm = ["launch.py", "--config", "configs/toy2d_edm.py", "--config.train.num_steps=2",
         "--config.eval.at_end=False"]
  cd = ["launch.py", "--config", "configs/toy2d_cd.py", "--workdir", str(s),
        f"--config.cd.teacher_workdir={t}", "--config.cd.init_from_teacher=False",
        "--config.eval.at_end=False"]
  assert launch.main(edm + ["--workdir", str(t)]) == 0
  assert launch.main(cd + ["--config.train.num_steps=2"]) == 0
  assert launch.main(edm + ["--workdir", str(t2), "--config.model.hidden=64"]) == 0
  os.rename(t, tmp_path / "T_old")
  os.rename(t2, t)
  capsys.readouterr()
  assert launch.main(cd + ["--config.train.num_steps=4"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("cmjax:")]
  assert len(err) == 1 and "checkpoint 2" in err[0], err
  assert "array teacher_params/Dense_0/bias was saved with shape (128,)" in err[0]
  assert "expects (64,)" in err[0]
  assert sorted(os.listdir(s / "checkpoints")) == ["2"]


def test_restore_fields_reads_only_those_fields_with_the_same_checks(tmp_path, capsys):
  """`restore_fields` (what sampling and a teacher need: one copy of the parameters) never reads
  the other fields: with the bytes of 'ids' damaged, 'w' still restores, while the whole state
  and 'ids' itself fail their checksum; a shape mismatch within the fields is one line."""
  s1, s2 = _two_checkpoints(tmp_path)
  _flip_64_bytes_of_largest_tensor_file(tmp_path / "2")
  ck = checkpointing.Checkpointer(str(tmp_path))
  whole = _abstract(s2)
  fields, meta = ck.restore_fields(2, {"w": whole["w"]})
  assert set(fields) == {"w"} and meta == {"m": 2} and _leaves_equal(fields["w"], s2["w"])
  with pytest.raises(CheckpointCorruptError, match="array ids does not match the checksum"):
    ck.restore(2, whole)
  with pytest.raises(CheckpointCorruptError, match="array ids does not match the checksum"):
    ck.restore_fields(2, {"ids": whole["ids"]})
  wrong = jax.ShapeDtypeStruct((16,), jnp.float32, sharding=whole["w"].sharding)
  with pytest.raises(CheckpointMismatchError, match=r"array w was saved with shape \(8,\)"):
    ck.restore_fields(2, {"w": wrong})
  # restore_newest with fields_only falls back past an unreadable checkpoint as restore does
  step, fields, _ = ck.restore_newest({"ids": whole["ids"]}, fields_only=True)
  ck.close()
  assert step == 1 and _leaves_equal(fields["ids"], s1["ids"])
  assert "checkpoint 2" in capsys.readouterr().err
