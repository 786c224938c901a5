"""Benchmark: how long a resumed run takes to get back to training, with and without JAX's
persistent compilation cache (`train.compile_cache`).

  python bench/resume_startup.py [--config digits_ect] [--repeats 3] [--json out.json]

Trains the config (the full default digits run's network, optimiser and batch) for a few steps
into a scratch workdir with a fresh cache directory, then resumes it for one more step, `repeats`
times with the cache off (`--config.train.compile_cache=`: what every launch paid before the
cache existed) and `repeats` times with the cache on, interleaved (off, on, off, on, ...). Each
resume is a new process, as after a preemption. Printed per launch and as min / median:

  launch_s   wall time from starting the process to its exit: imports, restoring the checkpoint,
             compiling (or loading) the train step, one step and its checkpoint (eval is off);
  compile_s  the train step's compile (or cache load) time the run itself reports.

Ends with one JSON line (also written to --json).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emit import emit  # noqa: E402

COMPILED = re.compile(r"train step compiled in ([0-9.]+)s")


def launch(config: str, workdir: str, steps: int, cache: str, extra: list[str]) -> dict:
  """One `python -m cmjax.cli` process training `workdir` up to `steps` steps."""
  cmd = [sys.executable, "-m", "cmjax.cli", "--config", config, "--workdir", workdir,
         f"--config.train.num_steps={steps}", f"--config.train.checkpoint_every={steps}",
         "--config.eval.at_end=False", "--config.train.sample_every=0",
         f"--config.train.compile_cache={cache}", *extra]
  env = {k: v for k, v in os.environ.items() if k != "CMJAX_COMPILE_CACHE"}
  t0 = time.perf_counter()
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if out.returncode != 0:
    sys.exit(f"resume_startup: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
  m = COMPILED.search(out.stdout + out.stderr)
  return {"launch_s": round(wall, 2), "compile_s": float(m.group(1)) if m else None}


def summary(rows: list[dict], key: str) -> dict:
  vals = [r[key] for r in rows]
  return {"min": min(vals), "median": round(statistics.median(vals), 2)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="digits_ect")
  ap.add_argument("--first_steps", type=int, default=4, help="steps of the first launch")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--json", default="")
  ap.add_argument("--dry", action="store_true", help="the ':smoke' variant, 1 repeat (for tests)")
  ap.add_argument("overrides", nargs="*", help="extra --config.X=Y flags for every launch")
  args = ap.parse_args()
  config = args.config + (":smoke" if args.dry and ":" not in args.config else "")
  repeats = 1 if args.dry else args.repeats

  with tempfile.TemporaryDirectory(prefix="cmjax_resume_") as tmp:
    cache = os.path.join(tmp, "xla_cache")
    workdir = os.path.join(tmp, "run")
    first = launch(config, workdir, args.first_steps, cache, args.overrides)
    print(f"first launch ({args.first_steps} steps, cold cache): {first}", flush=True)
    steps = args.first_steps
    rows = {"off": [], "on": []}
    for i in range(repeats):
      for mode in ("off", "on"):
        steps += 1
        r = launch(config, workdir, steps, cache if mode == "on" else "", args.overrides)
        rows[mode].append(r)
        print(f"resume {i + 1}/{repeats}, cache {mode}: {r}", flush=True)

  import jax  # versions only, after the runs (the runs are their own processes)
  result = {
      "config": config, "machine": platform.processor() or platform.machine(),
      "cpus": os.cpu_count(), "jax": jax.__version__,
      "load_avg_at_end": round(os.getloadavg()[0], 2),
      "first_launch": first, "cache_off": rows["off"], "cache_on": rows["on"],
      "launch_s": {m: summary(rows[m], "launch_s") for m in rows},
      "compile_s": {m: summary(rows[m], "compile_s") for m in rows},
  }
  off, on = result["launch_s"]["off"]["median"], result["launch_s"]["on"]["median"]
  result["launch_speedup"] = round(off / on, 2)
  emit(result, args.json)


if __name__ == "__main__":
  main()
