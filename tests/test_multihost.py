"""2 local CPU processes x 4 devices (jax.distributed over gloo) == 1 process x 8 devices."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import launch
from _helpers import restore_latest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["--config", "configs/digits_ect.py:smoke", "--config.train.num_steps=4"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  port = _free_port()
  env = dict(os.environ)
  env["XLA_FLAGS"] = os.environ["XLA_FLAGS"].replace("device_count=8", "device_count=4")
  env["JAX_PLATFORMS"] = "cpu"
  env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  procs = [subprocess.Popen(
      [sys.executable, "launch.py", *ARGS, "--workdir", str(multi),
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "8 device(s)" in outs[0]
  summary = json.load(open(multi / "summary.json"))  # written by process 0 only
  assert summary["devices"] == 8 and summary["steps"] == 4

  assert launch.main(["launch.py", *ARGS, "--workdir", str(single)]) == 0
  (sm, _), (ss, _) = restore_latest(multi), restore_latest(single)
  for a, b in zip(jax.tree.leaves(sm), jax.tree.leaves(ss)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  # Same samples too (same keys, same parameters): the FDs agree.
  single_summary = json.load(open(single / "summary.json"))
  assert summary["fd_digits_1step"] == pytest.approx(single_summary["fd_digits_1step"], rel=1e-3)
