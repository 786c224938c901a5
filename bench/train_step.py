"""Benchmark: compile time and img/s of a config's train step (default: the digits ECT run).

  python bench/train_step.py [--config configs/digits_ect.py] [--steps 50] [--json out.json]

Prints one JSON line: device, devices, batch, params, compile_s, img_per_s, step_ms.
Timing covers `steps` steps after one warm-up step, blocked on the result.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/digits_ect.py")
  ap.add_argument("--steps", type=int, default=50)
  ap.add_argument("--batch", type=int, default=0, help="override train.batch_size")
  ap.add_argument("--json", default="", help="also write the result here")
  args = ap.parse_args()

  import jax
  import numpy as np

  from cmjax import parallel
  from cmjax.data import build_source
  from cmjax.trainer import Run, stream_key
  import importlib.util

  path, _, variant = args.config.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(variant) if variant else mod.get_config()
  if args.batch:
    config.train.batch_size = args.batch
  run = Run(config)
  step_fn, compile_s = run.compile_train_step()
  state = run.init_state()
  source = build_source(config)
  key = stream_key(config.seed, "train")
  batch = parallel.global_batch(source.batch(0), run.mesh)
  state, m = step_fn(state, batch, key)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(args.steps):
    state, m = step_fn(state, parallel.global_batch(source.batch(i + 1), run.mesh), key)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  result = {
      "config": args.config, "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "batch": config.train.batch_size,
      "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
      "compile_s": round(compile_s, 2), "img_per_s": round(args.steps * config.train.batch_size / dt, 1),
      "step_ms": round(1000 * dt / args.steps, 2), "jax": jax.__version__,
  }
  print(json.dumps(result))
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
