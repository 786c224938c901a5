"""GPU check: the paper-scale steps of cmjax on one GPU (H100/H200), and the PyTorch reference.

Run through `bench/gpu_check.sh` (which installs missing wheels first); the rows, in order:
  ect_fp32      configs/cifar10_ect.py (DDPM++, 55.7M) train step, batch 128, fp32
  ect_bf16      the same in bf16 mixed precision
  adm_bf16      configs/imagenet64_ect.py (EDM's ADM, class-conditional 64x64) step, batch 128, bf16
  sample_1step  1-step sampling of the cifar10_ect DDPM++ (EMA weights), batch 1024, fp32
  torch_ect     locuslab/ect's ECMLoss + ECMPrecond(SongUNet) + RAdam + EMA step in PyTorch eager
                at batch 128 (only with --ect_repo and torch importable; else skipped, saying why)
Each row reports ms/step, img/s, peak device memory (the backend's peak_bytes_in_use, MiB) and,
for the jax train steps, MFU = XLA cost-analysis FLOPs of the compiled step / step time / the
chip's dense bf16 peak (H100 SXM and H200: 989 TFLOP/s; fp32 rows are divided by the same bf16
peak, so their MFU shows how far fp32 is from the chip's tensor-core rate). A row that fails
is reported with its one-line error and the next row runs.

--dry runs the same code on CPU with tiny shapes (the configs' ':smoke' nets, batch 8, 1 timed
steps) in well under 2 minutes; tests/test_bench_scripts.py runs it (no torch needed).

  python bench/gpu_check.py [--dry] [--ect_repo PATH] [--json out.json] [--steps 10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# Dense bf16 peak FLOP/s by device_kind substring [NVIDIA H100/H200 datasheets, SXM].
PEAK_BF16 = (("H200", 989e12), ("H100", 989e12))
ROW_NAMES = ("ect_fp32", "ect_bf16", "adm_bf16", "sample_1step", "torch_ect")


def chip_peak(device_kind: str):
  """The chip's dense bf16 peak FLOP/s from jax's device_kind, or None when not known."""
  for name, peak in PEAK_BF16:
    if name.lower() in device_kind.lower():
      return peak
  return None


def mfu(flops_per_step: float, step_s: float, peak):
  """Model FLOPs utilisation: flops_per_step / step_s / peak (None without a peak or FLOPs)."""
  if not peak or not flops_per_step or step_s <= 0:
    return None
  return round(flops_per_step / step_s / peak, 4)


def load_config(name: str, dry: bool, batch: int, precision: str):
  """configs/<name>.py (':smoke' when dry) with the batch size and precision of a row."""
  import importlib
  try:
    mod = importlib.import_module(f"cmjax.configs.{name}")
  except ImportError:  # the layout before configs/ moved into the package
    mod = importlib.import_module(f"configs.{name}")
  c = mod.get_config("smoke" if dry else "")
  c.train.update(batch_size=batch, precision=precision, grad_accum=1)
  c.eval.update(batch_size=batch)
  return c


def peak_mib():
  """The default device's peak memory in use (MiB), where the backend reports it."""
  import jax
  stats = jax.devices()[0].memory_stats() or {}
  return round(stats["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in stats else None


def jax_train_row(config, steps: int, peak) -> dict:
  """Compiles and times config's train step on random images (and labels)."""
  import jax
  import numpy as np
  from cmjax.run import Run, stream_key
  run = Run(config)
  compiled, compile_s, memory = run.compile_train_step()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else (cost or {})
  flops = float(cost.get("flops", 0.0))
  b = config.train.batch_size
  rng = np.random.default_rng(0)
  local = {"image": rng.uniform(-1, 1, (b,) + tuple(run.image_shape)).astype(np.float32)}
  if run.num_classes:
    local["label"] = rng.integers(0, run.num_classes, (b,)).astype(np.int32)
  batch = run.device_batch(local)
  state, key = run.init_state(), stream_key(config.seed, "train")
  state, m = compiled(state, batch, key)  # warm-up
  jax.block_until_ready(m)
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = compiled(state, batch, key)
  jax.block_until_ready(m)
  dt = (time.perf_counter() - t0) / steps
  n_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(state.params)))
  return {"batch": b, "precision": config.train.precision, "params": n_params,
          "compile_s": round(compile_s, 2), "ms_per_step": round(1000 * dt, 2),
          "img_per_s": round(b / dt, 1), "xla_flops_per_step": flops,
          "mfu_vs_bf16_peak": mfu(flops, dt, peak), "memory_analysis_mib": memory,
          "peak_mib": peak_mib(), "loss": float(m["loss"]), "steps_timed": steps}


def jax_sample_row(config, steps: int) -> dict:
  """Times 1-step sampling (the run's '1step' sampler) of config.eval.batch_size images."""
  import jax
  from cmjax.run import Run
  run = Run(config)
  params = run.init_state().ema_params
  spec = dict(run.named_samplers)["1step"]
  b = config.eval.batch_size
  t0 = time.perf_counter()
  run.generate(params, b, spec)  # compile + warm-up
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    x = run.generate(params, b, spec)  # returns host numpy: blocked
  dt = (time.perf_counter() - t0) / steps
  del jax
  return {"batch": b, "compile_s": round(compile_s, 2), "ms_per_batch": round(1000 * dt, 2),
          "img_per_s": round(b / dt, 1), "peak_mib": peak_mib(), "finite": bool((x == x).all()),
          "steps_timed": steps}


def torch_row(ect_repo: str, dry: bool, batch: int, steps: int) -> dict:
  """The reference ECT step (bench/side_by_side.py's TorchSide) on CUDA, or CPU when dry."""
  try:
    import torch
  except ImportError:
    return {"skipped": "torch is not installed here"}
  if not ect_repo:
    return {"skipped": "no --ect_repo given"}
  import importlib.util
  import numpy as np
  spec = importlib.util.spec_from_file_location(
      "side_by_side", os.path.join(ROOT, "bench", "side_by_side.py"))
  sbs = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(sbs)
  ROWS, Row, TorchSide = sbs.ROWS, sbs.Row, sbs.TorchSide
  device = "cuda" if (torch.cuda.is_available() and not dry) else "cpu"
  row = ROWS["small"] if dry else Row("ddpmpp", 128, (2, 2, 2), 4, batch)
  row = Row(row.name, row.channels, row.mult, row.blocks, batch)
  images = np.random.default_rng(0).uniform(-1, 1, (batch, 32, 32, 3)).astype(np.float32)
  side = TorchSide(ect_repo, row, images, device=device)
  side.step()  # warm-up (cuDNN autotune off: EDM's default)
  t0 = time.perf_counter()
  for _ in range(steps):
    side.step()
  dt = (time.perf_counter() - t0) / steps
  peak = (round(torch.cuda.max_memory_allocated() / 2**20, 1) if device == "cuda" else None)
  return {"device": device, "batch": batch, "params": side.params, "precision": "fp32",
          "tf32_conv": bool(torch.backends.cudnn.allow_tf32),
          "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
          "ms_per_step": round(1000 * dt, 2), "img_per_s": round(batch / dt, 1),
          "peak_mib": peak, "torch": torch.__version__, "steps_timed": steps}


def run_one(name: str, args) -> dict:
  """Runs row `name` in this process (jax started here) and returns its result dict."""
  if args.dry:  # before jax starts: CPU, and XLA's fast-compiling level (numbers, not speed)
    os.environ["JAX_PLATFORMS"] = "cpu"
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
      os.environ["XLA_FLAGS"] = (flags + " --xla_backend_optimization_level=0").strip()
  import jax
  dry, steps = args.dry, args.steps or (1 if args.dry else 10)
  dev = jax.devices()[0]
  peak = chip_peak(dev.device_kind)
  train_b, adm_b, sample_b = (8, 8, 8) if dry else (128, 128, 1024)
  jobs = {
      "ect_fp32": lambda: jax_train_row(load_config("cifar10_ect", dry, train_b, "fp32"), steps, peak),
      "ect_bf16": lambda: jax_train_row(load_config("cifar10_ect", dry, train_b, "bf16"), steps, peak),
      "adm_bf16": lambda: jax_train_row(load_config("imagenet64_ect", dry, adm_b, "bf16"), steps, peak),
      "sample_1step": lambda: jax_sample_row(load_config("cifar10_ect", dry, sample_b, "fp32"), steps),
      "torch_ect": lambda: torch_row(args.ect_repo, dry, train_b, steps),
  }
  env = {"device": dev.device_kind, "platform": dev.platform, "devices": jax.device_count(),
         "jax": jax.__version__, "peak_bf16_flops": peak,
         "matmul_precision": str(jax.config.jax_default_matmul_precision)}
  return {**jobs[name](), "env": env}


def main(argv=None) -> int:
  """Runs each row in its own process (a clean peak-memory reading; a failing or out-of-memory
  row does not take the others down; jax's and torch's allocators never share a process) within
  --budget_s seconds, printing each row's JSON line and writing them all after every row."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dry", action="store_true", help="CPU, smoke nets, batch 8, 1 step")
  ap.add_argument("--ect_repo", default="", help="a locuslab/ect checkout: adds the torch row")
  ap.add_argument("--rows", default=",".join(ROW_NAMES))
  ap.add_argument("--steps", type=int, default=0, help="timed steps per row (default 10; dry 1)")
  ap.add_argument("--json", default="", help="default bench/results/gpu_check_<device>.json")
  ap.add_argument("--budget_s", type=float, default=450.0, help="time for all rows together")
  ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # internal: run one row here
  args = ap.parse_args(argv)
  from cmjax.errors import ConfigError
  rows = [r for r in args.rows.split(",") if r]
  bad = [r for r in rows + ([args.one] if args.one else []) if r not in ROW_NAMES]
  if bad:
    raise ConfigError(f"unknown row {bad[0]!r}; known: {', '.join(ROW_NAMES)}")
  if args.one:
    try:
      r = run_one(args.one, args)
    except Exception as e:  # noqa: BLE001 - the parent reports the row's one-line error
      import traceback
      traceback.print_exc()
      r = {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"}
    print("GPU_CHECK_ROW " + json.dumps(r), flush=True)
    return 0
  import subprocess
  deadline = time.monotonic() + args.budget_s
  out = {"dry": args.dry, "rows": {}}
  path = args.json
  failed = 0
  passthrough = ["--steps", str(args.steps)] + (["--dry"] if args.dry else []) + (
      ["--ect_repo", args.ect_repo] if args.ect_repo else [])
  for name in rows:
    t0, left = time.perf_counter(), deadline - time.monotonic()
    if left < 20:
      r = {"skipped": f"out of time (--budget_s {args.budget_s:g})"}
    else:
      try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", name, *passthrough],
                              stdout=subprocess.PIPE, text=True, timeout=left)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("GPU_CHECK_ROW ")]
        if lines:
          r = json.loads(lines[-1][len("GPU_CHECK_ROW "):])
        else:
          tail = proc.stdout.strip().splitlines()[-1:] or [""]
          r = {"error": f"row process exited {proc.returncode}: {tail[0][:300]}"}
      except subprocess.TimeoutExpired:
        r = {"error": f"row ran past the remaining budget ({left:.0f} s)"}
    if "error" in r:
      failed += 1
    for k, v in r.pop("env", {}).items():
      out.setdefault(k, v)
    r["wall_s"] = round(time.perf_counter() - t0, 1)
    out["rows"][name] = r
    print(json.dumps({"row": name, **r}), flush=True)
    if not path:
      kind = str(out.get("device", "unknown")).replace(" ", "_")
      path = os.path.join(ROOT, "bench", "results", f"gpu_check_{'dry' if args.dry else kind}.json")
    with open(path, "w") as f:  # after every row: a later timeout keeps what was measured
      json.dump(out, f, indent=2)
  print(f"gpu_check: wrote {path}", flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
