"""Benchmark: compile time, img/s and memory of a config's train step (default: digits ECT).

  python bench/train_step.py [--config configs/digits_ect.py] [--steps 50] [--json out.json]
  python bench/train_step.py --config configs/cifar10_ect.py --batch 128 --precision bf16 \
      --mock_data --steps 20 --json bench/results/<device>_cifar10_ect_bf16.json

Prints one JSON line: device, devices, batch, precision, params, compile_s, img_per_s,
step_ms, memory (XLA's per-device analysis of the compiled step, MiB) and peak_mib (the
device's peak memory in use, where the backend reports it, e.g. GPUs).
Timing covers `steps` steps after one warm-up step, blocked on the result. --mock_data reads
TFDS data sets from `tfds.testing.mock_data` (random images of the right shape), so a step can
be timed without the prepared data set; the step's cost does not depend on pixel values.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from emit import emit  # noqa: E402


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/digits_ect.py")
  ap.add_argument("--steps", type=int, default=50)
  ap.add_argument("--batch", type=int, default=0, help="override train.batch_size")
  ap.add_argument("--precision", default="", help="override train.precision (fp32 or bf16)")
  ap.add_argument("--grad_accum", type=int, default=0, help="override train.grad_accum")
  ap.add_argument("--mock_data", action="store_true", help="TFDS data from tfds.testing.mock_data")
  ap.add_argument("--json", default="", help="also write the result here")
  args = ap.parse_args()

  import jax
  import numpy as np

  from cmjax.run import Run, stream_key
  import importlib.util

  path, _, variant = args.config.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  config = mod.get_config(variant) if variant else mod.get_config()
  if args.batch:
    config.train.batch_size = args.batch
  if args.precision:
    config.train.precision = args.precision
  if args.grad_accum:
    config.train.grad_accum = args.grad_accum
  with contextlib.ExitStack() as stack:
    if args.mock_data:
      import tensorflow_datasets as tfds
      stack.enter_context(tfds.testing.mock_data(num_examples=4 * config.train.batch_size))
    run = Run(config)
    step_fn, compile_s, memory = run.compile_train_step()
    state = run.init_state()
    source = run.source()
    batches = [run.device_batch(source.batch(i)) for i in range(min(args.steps + 1, 4))]
  key = stream_key(config.seed, "train")
  state, m = step_fn(state, batches[0], key)
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for i in range(args.steps):
    state, m = step_fn(state, batches[(i + 1) % len(batches)], key)
  jax.block_until_ready(m)
  dt = time.perf_counter() - t0
  stats = jax.devices()[0].memory_stats() or {}
  result = {
      "config": args.config, "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
      "batch": config.train.batch_size, "precision": config.train.precision,
      "grad_accum": config.train.grad_accum, "method": config.method, "model": config.model.name,
      "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params))),
      "compile_s": round(compile_s, 2), "img_per_s": round(args.steps * config.train.batch_size / dt, 1),
      "step_ms": round(1000 * dt / args.steps, 2), "memory_mib": memory,
      "peak_mib": round(stats["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in stats else None,
      "steps_timed": args.steps, "jax": jax.__version__,
  }
  emit(result, args.json)


if __name__ == "__main__":
  main()
