"""Bad input is one line `cmjax: error: ...`, never a traceback: the fast part of
scripts/fault_sweep.py in-process (with a check that nothing was compiled), the pieces it relies
on (workdir checks, the checked .npz reader, the sample-file guard, the multi-host start-up line,
Ctrl-C and the last-resort net of cli.main), and the whole sweep in subprocesses (slow).

No frozen assets: every input is made here (truncated / bit-flipped / object .npz files, JSON of
the wrong type, config files)."""
import io
import json
import os
import sys
import zipfile

import jax
import numpy as np
import pytest

import launch
from cmjax import cli, distributed
from cmjax.errors import ConfigError, WeightsFileError
from cmjax.modes.sample import check_no_other_samples, default_tag
from cmjax.param_files import read_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import fault_sweep  # noqa: E402

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration",
                   "/jax/compilation_cache/compile_requests_use_cache")
_compiles = []
_record = lambda name, *a, **k: _compiles.append(name) if name in _COMPILE_EVENTS else None  # noqa: E731
jax.monitoring.register_event_duration_secs_listener(_record)
jax.monitoring.register_event_listener(_record)

FAST = [c for c in fault_sweep.CASES if c.fast and not c.trained]


@pytest.mark.parametrize("case", FAST, ids=[c.name for c in FAST])
def test_fast_sweep_case_is_one_line_before_compile(tmp_path, case):
  (tmp_path / "trained").mkdir()  # these cases read no checkpoint
  (tmp_path / "cases").mkdir()
  ctx = fault_sweep.Context(str(tmp_path / "cases"), str(tmp_path / "trained"))
  _compiles.clear()
  r = fault_sweep.run_case(case, ctx, inprocess=True)
  assert r["ok"], (r["why"], r["stderr"][-2000:])
  assert not _compiles, f"{case.name}: compiled before refusing"


def test_sweep_reports_a_failing_case(tmp_path):
  """The sweep must be able to fail: a case that expects the wrong exit code is reported."""
  (tmp_path / "c").mkdir()
  ctx = fault_sweep.Context(str(tmp_path / "c"), str(tmp_path))
  wrong = fault_sweep.Case("expects 0", fault_sweep._file_workdir, 0, "is a file")
  r = fault_sweep.run_case(wrong, ctx, inprocess=True)
  assert not r["ok"] and "exit 2, expected 0" in r["why"]


def test_check_workdir(tmp_path):
  f = tmp_path / "f"
  f.write_text("x")
  for bad, needle in [(str(f), "is a file"), (str(f / "sub" / "run"), "lies below the file"),
                      ("/proc/self/x", "virtual file system"), ("/sys", "virtual file system")]:
    with pytest.raises(ConfigError, match=needle):
      cli.check_workdir(bad, "train")
  cli.check_workdir(str(tmp_path / "new" / "run"), "train")  # creates nothing
  assert not (tmp_path / "new").exists()


def test_read_npz_one_line_errors(tmp_path):
  good = tmp_path / "w.npz"
  np.savez(good, a=np.arange(1000, dtype=np.float32), b=np.ones((3, 4), np.float32))
  out = read_npz(str(good), "x.weights")
  np.testing.assert_array_equal(out["a"], np.arange(1000, dtype=np.float32))
  data = good.read_bytes()
  trunc = tmp_path / "t.npz"
  trunc.write_bytes(data[: len(data) // 2])
  # A bit flip inside the stored (uncompressed) array: the zip's CRC-32 catches it on reading.
  flip = bytearray(data)
  i = data.index(np.arange(1000, dtype=np.float32)[500:].tobytes()[:16])
  flip[i] ^= 0x01
  flipped = tmp_path / "f.npz"
  flipped.write_bytes(bytes(flip))
  obj = tmp_path / "o.npz"
  np.savez(obj, a=np.array([{"x": 1}], dtype=object))
  single = tmp_path / "s.npy"
  np.save(single, np.zeros(3))
  for path, needle in [(trunc, "truncated or corrupt"), (flipped, "truncated or corrupt"),
                       (obj, "pickled data"), (single, "single .npy"),
                       (tmp_path / "none.npz", "no such file")]:
    with pytest.raises(WeightsFileError, match=needle) as e:
      read_npz(str(path), "x.weights")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.weights: ")
    assert "allow_pickle" not in str(e.value)


def test_sample_default_tag_and_guard(tmp_path):
  assert default_tag(400, False, ("cm", (80.0, 0.8)), 0, "ema") == "step400_2step"
  assert default_tag(400, False, ("cm", (80.0, 0.8)), 3, "raw") == "step400_2step_seed3_raw"
  assert default_tag(-1, True, ("ode", 18), 0, "ema") == "imported_ode"
  path = str(tmp_path / "s.npz")
  check_no_other_samples(path, 4, ("cm", (80.0,)), 0, "ema")  # no file: fine
  np.savez(path, step=4, seed=0, params="ema", spec=json.dumps(["cm", [80.0]]))
  check_no_other_samples(path, 4, ("cm", (80.0,)), 0, "ema")  # the same request again: fine
  with pytest.raises(ConfigError, match=r"another request \(spec .* seed 0 \(now 2\)"):
    check_no_other_samples(path, 4, ("cm", (40.0,)), 2, "ema")
  (tmp_path / "bad.npz").write_bytes(b"not a zip")
  with pytest.raises(ConfigError, match="not a readable sample file"):
    check_no_other_samples(str(tmp_path / "bad.npz"), 4, ("cm", (80.0,)), 0, "ema")


def test_accelerator_probe_never_raises(monkeypatch):
  """find_spec('jax_plugins.xla_cuda12') raises ModuleNotFoundError without a jax_plugins package
  (the multi-host start-up on a CPU host without JAX_PLATFORMS)."""
  import importlib.util
  real = importlib.util.find_spec

  def find_spec(name, *a):
    if name.startswith("jax_plugins."):
      raise ModuleNotFoundError("No module named 'jax_plugins'")
    return None if "cuda" in name or name == "libtpu" else real(name, *a)
  monkeypatch.setattr(importlib.util, "find_spec", find_spec)
  assert distributed._has_accelerator_plugin() is False


def test_initialize_failure_is_one_line(monkeypatch):
  def boom(**kw):
    assert kw["initialization_timeout"] == 7 + distributed._GRACE_S
    raise RuntimeError("DEADLINE_EXCEEDED: Barrier timed out\n  more lines")
  monkeypatch.setattr(jax.distributed, "initialize", boom)
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.config, "update", lambda *a: None)
  with pytest.raises(distributed.InitializationError) as e:
    distributed.initialize("localhost:1234", 2, 1, timeout=7)
  msg = str(e.value)
  assert "\n" not in msg and "process 1 of 2 waited for the coordinator (process 0) at " \
      "localhost:1234" in msg and "7 s" in msg and "DEADLINE_EXCEEDED" in msg


def _smoke(tmp_path):
  return ["launch.py", "--config", "configs/digits_ect.py:smoke", "--workdir", str(tmp_path / "w")]


def test_ctrl_c_is_one_line_exit_130(tmp_path, capsys, monkeypatch):
  import cmjax.trainer

  def interrupted(config, workdir):
    raise KeyboardInterrupt
  monkeypatch.setattr(cmjax.trainer, "train_and_evaluate", interrupted)
  assert launch.main(_smoke(tmp_path)) == 130  # in-process: returned, not os._exit
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [e for e in err if e.startswith("cmjax: error: interrupted")] and len(err) == 1


def test_unexpected_error_is_one_line_and_traceback_file(tmp_path, capsys, monkeypatch):
  import cmjax.trainer

  def bug(config, workdir):
    os.makedirs(workdir, exist_ok=True)
    raise TypeError("unsupported operand\nsecond line")
  monkeypatch.setattr(cmjax.trainer, "train_and_evaluate", bug)
  assert launch.main(_smoke(tmp_path)) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("cmjax: error: unexpected TypeError: unsupported "
                                             "operand second line"), err
  saved = tmp_path / "w" / "cmjax_error.txt"
  assert str(saved) in err[0] and "Traceback" in saved.read_text()


def test_orbax_error_logs_are_filtered():
  import logging
  filt = cli._OrbaxErrorFilter()
  rec = lambda name, level: logging.LogRecord(name, level, "/x/orbax/checkpoint/a.py", 1, "m", (),  # noqa: E731
                                              None)
  assert not filt.filter(rec("absl", logging.ERROR))
  assert filt.filter(rec("absl", logging.WARNING))
  other = logging.LogRecord("cmjax", logging.ERROR, "/x/cmjax/trainer.py", 1, "m", (), None)
  assert filt.filter(other)


@pytest.mark.long  # minutes on a 2-core CPU (the suite runs the fast subset above)
def test_full_fault_sweep(tmp_path):
  """Every case in its own process (Ctrl-C during compile, a multi-host peer that never starts),
  then the trained workdir's checkpoints restore bit-identically."""
  out = io.StringIO()
  trained = str(tmp_path / "trained")
  fault_sweep.train_smoke(trained)
  ctx = fault_sweep.Context(str(tmp_path / "cases"), trained)
  os.makedirs(ctx.tmp)
  results = fault_sweep.sweep(ctx, fault_sweep.CASES, report=lambda s: out.write(s + "\n"))
  assert all(r["ok"] for r in results), out.getvalue()
