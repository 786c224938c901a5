"""Run options for pods and profiling: the preemption check's interval (no collective per step),
train.profile_steps (a profiler trace on disk), the persistent compilation cache for runs."""
import glob
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import launch
from cmjax import preemption
from cmjax.cli import configure_compile_cache

SMOKE = ["launch.py", "--config", "digits_ect:smoke"]


def test_preemption_check_gathers_only_every_n_steps(monkeypatch):
  calls = []
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(preemption.multihost_utils, "process_allgather",
                      lambda a: calls.append(1) or np.asarray([[False], [bool(a[0])]]))
  guard = preemption.PreemptionGuard(check_every=10)
  assert [guard.should_stop(s) for s in range(1, 31)] == [False] * 30
  assert len(calls) == 3  # steps 10, 20, 30 only
  guard.received = 15  # a signal on this process: acted on at the next multiple of 10
  assert not guard.should_stop(31) and guard.should_stop(40) and len(calls) == 4


def test_one_process_checks_every_step_without_a_collective(monkeypatch):
  monkeypatch.setattr(preemption.multihost_utils, "process_allgather",
                      lambda a: pytest.fail("no collective on one process"))
  guard = preemption.PreemptionGuard(check_every=10)
  assert not guard.should_stop(3)
  guard.received = 15
  assert guard.should_stop(3)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_guard_turns_either_signal_into_a_stop_request_and_restores_the_handler(sig):
  """Inside the guard a SIGTERM or SIGINT is recorded (the process does not die) and should_stop
  says so; on exit the previous handler is back (test_faults.py runs SIGTERM end to end)."""
  signum = getattr(signal, sig)
  before = signal.getsignal(signum)
  with preemption.PreemptionGuard() as guard:
    assert not guard.should_stop(1)
    os.kill(os.getpid(), signum)
    assert guard.should_stop(2) and guard.signal_name == sig
  assert signal.getsignal(signum) is before


def test_compile_cache_keeps_a_configured_cache_and_can_be_set(tmp_path):
  current = jax.config.jax_compilation_cache_dir  # the tests' cache (conftest)
  assert configure_compile_cache("auto") == current
  try:
    jax.config.update("jax_compilation_cache_dir", None)
    assert configure_compile_cache("") is None and jax.config.jax_compilation_cache_dir is None
    assert configure_compile_cache(str(tmp_path)) == str(tmp_path)
    assert jax.config.jax_compilation_cache_dir == str(tmp_path)
  finally:
    jax.config.update("jax_compilation_cache_dir", current)


def _launch(workdir, cache: str, steps: int, log_compiles: bool = False) -> str:
  """launch.py in a fresh process (as after a preemption) with JAX's cache left to cmjax."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("JAX_COMPILATION_CACHE") and k != "CMJAX_COMPILE_CACHE"}
  env.update(JAX_LOG_COMPILES="1" if log_compiles else "0", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, *SMOKE, "--workdir", str(workdir),
                         f"--config.train.num_steps={steps}", "--config.eval.at_end=False",
                         f"--config.train.compile_cache={cache}"],
                        cwd=os.path.dirname(launch.__file__), env=env, capture_output=True,
                        text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout + proc.stderr


class _Stop(BaseException):  # not an Exception: passes the CLI's last-net handler
  pass


def test_the_launch_applies_train_compile_cache_before_anything_compiles(tmp_path, monkeypatch):
  """The CLI hands train.compile_cache to configure_compile_cache after parsing and before a mode
  runs (it was parsed but never applied once). The launch is stopped there: nothing compiles.
  The end-to-end check (a resumed launch hits the cache) is the long test below."""
  from cmjax import cli
  seen = []

  def fake(setting):
    seen.append(setting)
    raise _Stop
  monkeypatch.setattr(cli, "configure_compile_cache", fake)
  for extra, want in (([], "auto"), (["--config.train.compile_cache="], ""),
                      ([f"--config.train.compile_cache={tmp_path / 'xla'}"], str(tmp_path / "xla"))):
    with pytest.raises(_Stop):
      launch.main(SMOKE + ["--workdir", str(tmp_path / "run"), *extra])
    assert seen[-1] == want
  assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.long  # 40 s of two launches; the wiring is checked above in the fast tier
def test_a_resumed_launch_loads_its_train_step_from_the_compile_cache(tmp_path):
  """train.compile_cache reaches JAX before anything compiles: the first launch writes the train
  step to the cache, the resumed launch (more steps) finds it and compiles nothing of it (until
  this test, the setting was parsed but never applied: every resume recompiled)."""
  cache = tmp_path / "xla"
  _launch(tmp_path / "run", str(cache), steps=2)
  assert glob.glob(str(cache / "jit_train_step-*"))
  out = _launch(tmp_path / "run", str(cache), steps=3, log_compiles=True)
  assert "Persistent compilation cache hit for 'jit_train_step'" in out
  assert "MISS for 'jit_train_step'" not in out


def test_bad_profile_steps_is_one_line(tmp_path, capsys):
  assert launch.main(SMOKE + ["--config.train.profile_steps=3", "--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "train.profile_steps must be 'A:B'" in err[0]


@pytest.mark.slow
def test_profile_steps_write_a_trace(tmp_path):
  assert launch.main(SMOKE + ["--config.train.profile_steps=1:3", "--workdir", str(tmp_path)]) == 0
  assert glob.glob(str(tmp_path / "profile" / "**" / "*.xplane.pb"), recursive=True)


def test_cluster_detection_asks_jaxs_own_detectors(monkeypatch):
  """Automatic multi-host start-up asks JAX's cluster detectors (a plain Cloud TPU VM pod slice is
  found through its metadata server, not the environment; also mpirun, Kubernetes): a detected
  cluster of 2 processes starts JAX's distributed runtime with no flags; a cluster of one
  process (a single TPU VM), a detector that raises and an opt-in one (mpi4py) do not."""
  from jax._src import clusters

  from cmjax import distributed

  for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(var, raising=False)
  assert distributed._cluster_detected() is False  # this machine is no cluster

  def kind(processes, present=True, opt_in=False, broken=False):
    class Detector:
      opt_in_only_method = opt_in

      @classmethod
      def is_env_present(cls):
        if broken:
          raise RuntimeError("metadata server unreachable")
        return present

      @classmethod
      def get_process_count(cls):
        return processes
    return Detector

  monkeypatch.setattr(clusters.ClusterEnv, "_cluster_types",
                      [kind(1), kind(4, broken=True), kind(2, opt_in=True), kind(8, present=False)])
  assert distributed._cluster_detected() is False
  pod = kind(2)
  monkeypatch.setattr(clusters.ClusterEnv, "_cluster_types", [kind(3, present=False), pod])
  assert distributed._jax_cluster() is pod and distributed._cluster_detected() is True
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  monkeypatch.setattr(jax.config, "update", lambda *a: None)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  assert distributed.initialize() is True
  assert len(calls) == 1 and calls[0]["coordinator_address"] is None
  assert calls[0]["num_processes"] is None and calls[0]["process_id"] is None
