"""End to end through launch.py: train, summary, PNGs, exact resume, completion, bad input."""
import json
import os

import jax
import numpy as np
import pytest

import launch
from _helpers import restore_latest

SMOKE = ["launch.py", "--config", "configs/digits_ect.py:smoke"]
# Every jit compilation lowers to MLIR first (also on a persistent-cache hit); tracing alone
# (jax.eval_shape of the state) is not compiling.
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration",
                   "/jax/compilation_cache/compile_requests_use_cache")
_compiles = []
_record = lambda name, *a, **k: _compiles.append(name) if name in _COMPILE_EVENTS else None
jax.monitoring.register_event_duration_secs_listener(_record)
jax.monitoring.register_event_listener(_record)


def _launch(workdir, *extra):
  return launch.main(SMOKE + ["--workdir", str(workdir), *extra])


@pytest.mark.slow
def test_train_resume_complete_and_refuse_other_config(tmp_path, capsys):
  a, b = tmp_path / "a", tmp_path / "b"
  # Run A: 2 steps, stop; then the same command with 4 steps resumes to 4.
  _compiles.clear()
  no_eval = "--config.eval.at_end=False"  # run B below checks the evaluation
  assert _launch(a, "--config.train.num_steps=2", no_eval) == 0
  assert _compiles, "the compile detector must see the first run's compilations"
  s2 = json.load(open(a / "summary.json"))
  assert s2["steps"] == 2
  assert _launch(a, "--config.train.num_steps=4", no_eval) == 0
  assert "resumed from" in capsys.readouterr().out
  # Run B: 4 steps straight.
  assert _launch(b, "--config.train.num_steps=4") == 0
  summary = json.load(open(b / "summary.json"))
  for key in ("steps", "images_seen", "train_seconds", "fd_digits_1step", "fd_digits_2step",
              "fd_digits_data"):
    assert key in summary, key
  assert summary["steps"] == 4 and summary["images_seen"] == 4 * 16
  assert summary["fd_digits_data"] > 0 and np.isfinite(summary["fd_digits_1step"])
  assert summary["fd_digits_1step"] > summary["fd_digits_data"]  # 4 steps of a tiny net: far from data
  assert (b / "samples_1step.png").exists() and (b / "samples_2step.png").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(b))

  # Train 2N == train N, stop, resume, train N: bit-identical parameters and optimiser state.
  sa, meta_a = restore_latest(a, {"train.num_steps": 4})
  sb, _ = restore_latest(b, {"train.num_steps": 4})
  assert meta_a["images_seen"] == 64 and int(sa.step) == 4
  for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  # Complete: the same command does nothing more.
  before = sorted(os.listdir(b / "checkpoints"))
  capsys.readouterr()
  _compiles.clear()
  assert _launch(b, "--config.train.num_steps=4") == 0
  assert "already complete" in capsys.readouterr().out
  assert sorted(os.listdir(b / "checkpoints")) == before and not _compiles

  # A different config in the same workdir: one clear line, nothing compiled.
  assert _launch(b, "--config.train.num_steps=4", "--config.model.channels=16") == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "different config" in err[0] and "model.channels" in err[0]
  assert not _compiles


@pytest.mark.parametrize("extra,needle", [
    (["--config.train.batchsize=8"], "unknown config key"),
    (["--config.method=nope"], "unknown method 'nope'"),
    (["--config.model.name=resnet"], "unknown model name 'resnet'"),
    (["--config.train.batch_size=12"], "not divisible by the number of devices (8)"),
    (["--config.optim.lr=0"], "optim.lr must be positive"),
    (["--config.train.num_steps=-3"], "train.num_steps must be positive"),
    (["--config.ect.q=1.0"], "ect.q must be > 1"),
])
def test_bad_input_is_one_line_before_compile(tmp_path, capsys, extra, needle):
  _compiles.clear()
  assert _launch(tmp_path / "w", *extra) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("cmjax: error:") and needle in err[0], err
  assert not _compiles, "nothing may be traced or compiled before the config is validated"
  assert not (tmp_path / "w" / "checkpoints").exists()


def test_missing_config_file_and_variant(tmp_path, capsys):
  assert launch.main(["launch.py", "--config", "configs/nope.py", "--workdir", str(tmp_path)]) == 2
  assert launch.main(["launch.py", "--config", "configs/digits_ect.py:huge", "--workdir",
                      str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and "nope.py" in err[0] and "unknown variant 'huge'" in err[1]
