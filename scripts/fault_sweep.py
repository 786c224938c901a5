"""The bad-input sweep: every fault of docs/faults.md that is bad input, run against smoke configs,
each checked for the promise of cmjax/cli.py — the expected exit code, exactly one
`cmjax: error: ...` line on stderr naming the problem, no Python traceback, no crash (signal,
core dump) — and, after all of them, that the checkpoints of a trained smoke workdir still
restore bit-identically (nothing on disk was lost).

  python scripts/fault_sweep.py                  # every case, each in its own process (minutes)
  python scripts/fault_sweep.py --fast           # only the cases refused before compiling
  python scripts/fault_sweep.py --trained DIR    # reuse a trained digits_ect:smoke workdir (4 steps)

Prints one table row per case and exits 1 when any case fails. `tests/test_bad_inputs.py` runs the
fast cases in-process (`run_case(..., inprocess=True)`), where it also checks that nothing was
compiled.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", "configs/digits_ect.py:smoke", "--config.train.num_steps=4"]
TRAINED_STEPS = 4


@dataclasses.dataclass
class Case:
  """One bad input. args(ctx) -> the argv after 'launch.py' (ctx: `Context`); rc: the exit code;
  needle: a text the one error line must hold; fast: refused before anything is compiled (runs
  in-process in the test); subprocess: must run in its own process (signals, env, multi-host);
  env: extra environment for that process; signal_when: (predicate(ctx, elapsed), signal) sent
  once the predicate holds; trained: needs the checkpoints of the trained workdir (an empty
  folder stands in for it otherwise)."""
  name: str
  args: Callable
  rc: int
  needle: str
  fast: bool = True
  trained: bool = False
  subprocess: bool = False
  env: Callable | None = None
  signal_when: tuple | None = None


class Context:
  """Scratch space of one sweep: `tmp` (a folder) and `trained` (a trained smoke workdir that the
  cases must never change; `copy()` gives a private copy to damage)."""

  def __init__(self, tmp: str, trained: str):
    self.tmp, self.trained = tmp, trained
    self._n = 0

  def path(self, name: str) -> str:
    self._n += 1
    return os.path.join(self.tmp, f"{self._n:02d}_{name}")

  def copy(self, name: str) -> str:
    dst = self.path(name)
    shutil.copytree(self.trained, dst, ignore=shutil.ignore_patterns("*.lock", "cmjax_error.txt"))
    return dst

  def file(self, name: str, data: bytes) -> str:
    p = self.path(name)
    with open(p, "wb") as f:
      f.write(data)
    return p

  def npz(self, name: str, truncate: bool = False, **arrays) -> str:
    import numpy as np
    p = self.path(name + ".npz")
    np.savez(p, **(arrays or {"a": np.arange(64, dtype=np.float32)}))
    if truncate:
      with open(p, "r+b") as f:
        f.truncate(os.path.getsize(p) // 2)
    return p


def _w(ctx, name, *extra):
  return ["--workdir", ctx.path(name), *extra]


def _file_workdir(ctx):
  return SMOKE + ["--workdir", ctx.file("a_file", b"x")]


def _below_file(ctx):
  return SMOKE + ["--workdir", os.path.join(ctx.file("a_file", b"x"), "run")]


def _summary(ctx, text):
  w = ctx.copy("summary")
  with open(os.path.join(w, "summary.json"), "w") as f:
    f.write(text)
  return SMOKE + ["--workdir", w]


def _eval_json(ctx):
  w = ctx.copy("evaljson")
  with open(os.path.join(w, "eval.json"), "w") as f:
    f.write('{"not": "a list"}')
  return SMOKE + ["--workdir", w, "--mode", "eval"]


def _fid_weights(ctx):
  return SMOKE + ["--workdir", ctx.trained, "--mode", "eval",
                  "--config.eval.fid_weights=" + ctx.npz("inception", truncate=True),
                  "--config.eval.fid_reference=" + ctx.path("ref.npz")]


def _fid_reference(ctx):
  return SMOKE + ["--workdir", ctx.trained, "--mode", "eval",
                  "--config.eval.fid_weights=" + ctx.npz("inception"),
                  "--config.eval.fid_reference=" + ctx.npz("ref", truncate=True)]


def _lpips(ctx):
  return ["--config", "configs/digits_ct.py", "--workdir", ctx.path("ct"),
          "--config.ct.distance=lpips", "--config.ct.lpips_weights=" + ctx.npz("lpips", True)]


def _truncate_state(workdir):
  """Truncates every array file of every checkpoint's state (a half-copied run)."""
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
    if os.sep + "state" + os.sep in root + os.sep and os.sep + "d" in root:
      for f in files:
        p = os.path.join(root, f)
        with open(p, "r+b") as fh:
          fh.truncate(os.path.getsize(p) // 3)


def _teacher(ctx):
  t = ctx.copy("teacher")
  _truncate_state(t)
  return ["--config", "configs/digits_cd.py", "--workdir", ctx.path("cd"),
          "--config.cd.teacher_workdir=" + t]


def _data_position(ctx):
  w = ctx.copy("datapos")
  p = os.path.join(w, "checkpoints", str(TRAINED_STEPS), "meta", "metadata")
  meta = json.load(open(p))
  meta["data_position"] = TRAINED_STEPS - 1
  with open(p, "w") as f:
    json.dump(meta, f)
  return ["--config", "configs/digits_ect.py:smoke", "--config.train.num_steps=6", "--workdir", w]


def _other_samples(ctx):
  import numpy as np
  w = ctx.copy("samples")
  os.makedirs(os.path.join(w, "samples"))
  np.savez(os.path.join(w, "samples", f"sample_step{TRAINED_STEPS}_1step.npz"),
           images=np.zeros((1, 8, 8, 1), np.uint8), step=TRAINED_STEPS, seed=0, params="ema",
           spec=json.dumps(["other", [1.0]]))
  return SMOKE + ["--workdir", w, "--mode", "sample", "--config.sample.sigmas=(80.0,)"]


def _model_config(ctx, name, mult):
  """A config file: digits_ect:smoke with `name`'s default fields and channel_mult=mult."""
  p = ctx.path(f"cfg_{name}.py")
  with open(p, "w") as f:
    f.write("import ml_collections\nfrom cmjax.configs.digits_ect import get_config as base\n"
            "from cmjax.models import model_fields\n\ndef get_config():\n  c = base('smoke')\n"
            f"  f = dict(model_fields({name!r}), name={name!r}, channel_mult={mult!r})\n"
            "  c.model = ml_collections.ConfigDict(f)\n  return c\n")
  return ["--config", p, "--workdir", ctx.path(name)]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _no_jax_platforms(ctx):
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  env["JAX_PLATFORMS"] = ""
  return env


def _peer(process_id):
  return lambda ctx: SMOKE + _w(ctx, "multihost", f"--coordinator_address=localhost:{_free_port()}",
                                "--num_processes=2", f"--process_id={process_id}",
                                "--init_timeout=5")


def _compiling(ctx, elapsed):
  """Ctrl-C once config.json is written (validation is over) and before the step compiled."""
  return any(os.path.exists(os.path.join(ctx.tmp, d, "config.json"))
             for d in os.listdir(ctx.tmp) if d.endswith("ctrlc")) and elapsed > 1.0


CASES = [
    Case("workdir is a file", _file_workdir, 2, "is a file"),
    Case("workdir under /proc", lambda c: SMOKE + ["--workdir", "/proc/cmjax_run"], 2,
         "virtual file system"),
    Case("workdir below a file", _below_file, 2, "lies below the file"),
    Case("summary.json is a list", lambda c: _summary(c, "[1, 2]"), 2, "not a summary"),
    Case("summary.json is text", lambda c: _summary(c, "hello"), 2, "not a summary"),
    Case("eval.json is an object", _eval_json, 2, "not a list of eval records"),
    Case("truncated Inception .npz", _fid_weights, 2, "not a readable .npz"),
    Case("truncated FID reference .npz", _fid_reference, 2, "eval.fid_reference"),
    Case("truncated LPIPS .npz", _lpips, 2, "ct.lpips_weights"),
    Case("truncated teacher checkpoint", _teacher, 2, "teacher checkpoint", trained=True),
    Case("edit.inputs=5:3", lambda c: SMOKE + ["--workdir", c.trained, "--mode", "edit",
                                                "--config.edit.inputs=5:3"], 2, "empty range"),
    Case("eval.grid_rows > samples", lambda c: SMOKE + _w(c, "grid", "--config.eval.grid_rows=40"),
         2, "eval.grid_rows=40"),
    Case("unet channel_mult too deep", lambda c: SMOKE + _w(c, "unet",
         "--config.model.channel_mult=(1,2,2,2,2)"), 2, "channel_mult"),
    Case("song_unet channel_mult too deep", lambda c: _model_config(c, "song_unet", (1, 1, 1, 1, 1)),
         2, "channel_mult"),
    Case("adm channel_mult too deep", lambda c: _model_config(c, "adm", (1, 1, 1, 1, 1)), 2,
         "channel_mult"),
    Case("hand-edited data position", _data_position, 2, "data position", trained=True),
    Case("sample file of another spec", _other_samples, 2, "another request", trained=True),
    Case("different config in the workdir", lambda c: SMOKE + ["--workdir", c.trained,
         "--config.model.channels=16"], 2, "different config", trained=True),
    Case("unknown config key", lambda c: SMOKE + _w(c, "k", "--config.train.batchsize=8"), 2,
         "unknown config key"),
    Case("incomplete multi-host flags", lambda c: SMOKE + _w(c, "mh", "--num_processes=2"), 2,
         "multi-host needs all"),
    Case("multi-host peer never starts (CPU, no JAX_PLATFORMS)", _peer(1), 1, "waited for the coordinator",
         fast=False, subprocess=True, env=_no_jax_platforms),
    Case("Ctrl-C during compile", lambda c: SMOKE + ["--workdir", c.path("ctrlc")], 130,
         "interrupted", fast=False, subprocess=True,
         signal_when=(_compiling, signal.SIGINT)),
]


def _child_env(extra: Callable | None, ctx) -> dict:
  env = extra(ctx) if extra else dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  if not env.get("JAX_PLATFORMS") and extra is None:
    env["JAX_PLATFORMS"] = "cpu"
  return env


def _default_sigint() -> None:
  """In the child: SIGINT back to its default (a background shell job inherits it ignored, and
  Python then never raises KeyboardInterrupt)."""
  signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_case(case: Case, ctx: Context, inprocess: bool = False, timeout: float = 300) -> dict:
  """Runs one case; returns {'name', 'rc', 'errors' (the cmjax: error lines), 'ok', 'why'}."""
  args = case.args(ctx)
  if inprocess and not case.subprocess:
    if ROOT not in sys.path:
      sys.path.insert(0, ROOT)
    import launch
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    try:
      os.chdir(ROOT)
      with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = launch.main(["launch.py", *args])
    finally:
      os.chdir(cwd)
    stderr, crashed = err.getvalue(), False
  else:
    proc = subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT,
                            env=_child_env(case.env, ctx), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    t0 = time.time()
    if case.signal_when:
      when, sig = case.signal_when
      while proc.poll() is None and not when(ctx, time.time() - t0) and time.time() - t0 < timeout:
        time.sleep(0.2)
      if proc.poll() is None:
        proc.send_signal(sig)
    try:
      _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      proc.kill()
      _, stderr = proc.communicate()
      stderr += "\n[fault_sweep: timed out]"
    rc = proc.returncode
    crashed = rc < 0 or "Segmentation fault" in stderr or "core dumped" in stderr
  errors = [line for line in stderr.splitlines() if line.startswith("cmjax: error:")]
  why = []
  if rc != case.rc:
    why.append(f"exit {rc}, expected {case.rc}")
  if len(errors) != 1:
    why.append(f"{len(errors)} error lines")
  elif case.needle not in errors[0]:
    why.append(f"line lacks {case.needle!r}")
  if "Traceback" in stderr:
    why.append("traceback")
  if crashed:
    why.append("crashed")
  return {"name": case.name, "rc": rc, "errors": errors, "ok": not why, "why": "; ".join(why),
          "stderr": stderr}


def checkpoint_digest(workdir: str) -> dict:
  """{relative path: sha256} of every file under workdir/checkpoints."""
  out = {}
  base = os.path.join(workdir, "checkpoints")
  for root, _, files in os.walk(base):
    for f in files:
      p = os.path.join(root, f)
      out[os.path.relpath(p, base)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
  return out


def restore_all(workdir: str) -> list:
  """[(step, [host arrays of the EMA params])] of every checkpoint of a trained smoke workdir."""
  import jax
  import numpy as np
  from cmjax.builders import build
  from cmjax.configs.digits_ect import get_config
  from cmjax.modes.common import restore_params
  config = get_config("smoke")
  config.train.num_steps = TRAINED_STEPS
  built = build(config)
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  return [(s, [np.asarray(x) for x in jax.tree.leaves(restore_params(built, workdir, s)[1])])
          for s in steps]


def train_smoke(workdir: str) -> None:
  """Trains digits_ect:smoke for TRAINED_STEPS steps in workdir (a subprocess)."""
  r = subprocess.run([sys.executable, "launch.py", *SMOKE, "--workdir", workdir], cwd=ROOT,
                     env=_child_env(None, None), capture_output=True, text=True)
  if r.returncode != 0:
    raise SystemExit(f"fault_sweep: training the smoke workdir failed:\n{r.stderr[-2000:]}")


def sweep(ctx: Context, cases: list, inprocess: bool = False, report=print) -> list:
  """Runs `cases`, then checks the trained workdir is unchanged and restores bit-identically;
  returns the result dicts (the last one is the workdir check)."""
  before_files = checkpoint_digest(ctx.trained)
  before = restore_all(ctx.trained)
  results = []
  report(f"{'case':<52} {'exit':>4}  result")
  for case in cases:
    t0 = time.time()
    r = run_case(case, ctx, inprocess)
    r["seconds"] = time.time() - t0
    results.append(r)
    shown = "ok" if r["ok"] else "FAIL: " + r["why"]
    report(f"{case.name:<52} {r['rc']:>4}  {shown}  ({r['seconds']:.1f}s)")
    if not r["ok"]:
      report("    " + "\n    ".join(r["stderr"].strip().splitlines()[-8:]))
  after = restore_all(ctx.trained)
  same = checkpoint_digest(ctx.trained) == before_files and len(before) == len(after) and all(
      s == t and all((x == y).all() and x.dtype == y.dtype for x, y in zip(a, b))
      for (s, a), (t, b) in zip(before, after))
  results.append({"name": "trained checkpoints restore bit-identically", "rc": 0, "ok": same,
                  "why": "" if same else "checkpoint files or restored arrays changed"})
  report(f"{results[-1]['name']:<52} {'':>4}  {'ok' if same else 'FAIL'}")
  return results


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--fast", action="store_true", help="only the cases refused before compiling")
  ap.add_argument("--trained", default="", help="a trained digits_ect:smoke workdir (4 steps)")
  ap.add_argument("--inprocess", action="store_true", help="run fast cases in this process")
  args = ap.parse_args(argv)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  with tempfile.TemporaryDirectory(prefix="cmjax_fault_sweep_") as tmp:
    trained = args.trained or os.path.join(tmp, "trained")
    if not args.trained:
      print(f"fault_sweep: training digits_ect:smoke ({TRAINED_STEPS} steps) in {trained}")
      train_smoke(trained)
    ctx = Context(os.path.join(tmp, "cases"), trained)
    os.makedirs(ctx.tmp)
    cases = [c for c in CASES if c.fast or not args.fast]
    results = sweep(ctx, cases, args.inprocess)
  bad = [r for r in results if not r["ok"]]
  print(f"fault_sweep: {len(results) - len(bad)}/{len(results)} ok")
  return 1 if bad else 0


if __name__ == "__main__":
  sys.exit(main())
