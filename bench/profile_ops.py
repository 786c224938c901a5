"""Benchmark: where a train step's time goes, per kind of operation, cmjax (XLA CPU) against the
authors' PyTorch code, for one row of bench/side_by_side.py.

  python bench/profile_ops.py --ect_repo /path/to/ect [--row small] [--steps 5] [--threads 1] \
      [--json out.json]

cmjax side: `jax.profiler` traces `steps` compiled train steps (XLA's CPU runtime records one
event per thunk, i.e. per operation of the optimised HLO, named after its instruction). Each
thunk is put in a category from the HLO's own metadata (the source op and the Flax module path
it came from: `.../enc_32x32_block0/norm0/...`), in the forward (`jvp(...)`) or backward
(`transpose(...)`) pass. PyTorch side: `torch.profiler` over the same number of the reference's
steps, self CPU time per aten op, put in the same categories. Both sides: ms per step per
category and the number of operations (thunks / aten calls) per step, next to the median wall
time of untraced steps (the difference: the runtime between operations, and Python).

Categories: convolution, group norm, silu, attention + linear (dot products), dropout, PRNG,
optimizer + EMA, other network (adds, scales, resampling, embedding), other. This is a
benchmark, never a test: CI has no torch.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from emit import emit  # noqa: E402 - bench/ is on the path from here

CATEGORIES = ("convolution", "group norm", "silu", "attention + linear", "dropout", "PRNG",
              "optimizer + EMA", "other network", "other")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+ (\S+?)\(")
_CALLS = re.compile(r"calls=%([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]+)"')
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) ")


def category_of_path(path: str) -> str:
  """A category from an HLO op_name path (jax primitive names and Flax module names)."""
  p = path.lower()
  if "threefry" in p or "random_bits" in p or "random_" in p or "/prng" in p:
    return "PRNG"
  if "dropout" in p:
    return "dropout"
  if "songunet" not in p and "precond" not in p:
    return "optimizer + EMA" if p.count("/") <= 3 or "optax" in p or "ema" in p else "other"
  if "conv_general_dilated" in p:
    return "convolution"
  if "/norm" in p or "groupnorm" in p:
    return "group norm"
  if "silu" in p:
    return "silu"
  if "dot_general" in p or "attn" in p or "qkv" in p:
    return "attention + linear"
  return "other network"


def hlo_thunk_table(hlo_text: str) -> dict:
  """{instruction name: (category, pass)} of every non-fused instruction of an optimised HLO
  module; a fusion takes the category of the most expensive-looking op it holds (a convolution
  or dot wins over elementwise) and the pass of its own metadata."""
  fused_paths, comp = collections.defaultdict(list), None
  instrs = []
  for line in hlo_text.splitlines():
    m = _COMP.match(line)
    if m:
      comp = m.group(1)
      continue
    mi = _INSTR.match(line)
    if not mi:
      continue
    name, opcode = mi.groups()
    paths = _OPNAME.findall(line)
    fused_paths[comp].extend(paths)
    calls = _CALLS.findall(line)
    instrs.append((comp, name, opcode, paths, calls))
  table = {}
  for comp, name, opcode, paths, calls in instrs:
    if comp and comp.startswith("fused_computation") or (comp or "").startswith("region_"):
      continue
    inner = [p for c in calls for p in fused_paths.get(c, [])] if opcode == "fusion" else []
    cats = [category_of_path(p) for p in (paths + inner)]
    if opcode == "convolution":
      cat = "convolution"
    elif "convolution" in cats:
      cat = "convolution"
    elif opcode in ("dot",) or "attention + linear" in cats and opcode == "fusion" and any(
        "dot_general" in p for p in inner):
      cat = "attention + linear"
    else:
      cat = collections.Counter(cats).most_common(1)[0][0] if cats else "other"
    where = (paths + inner + [""])[0]
    pass_ = "backward" if "transpose(" in where else "forward"
    table[name] = (cat, pass_)
  return table


def trace_events(trace_dir: str) -> list:
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  data = json.load(gzip.open(path))
  return data["traceEvents"] if isinstance(data, dict) else data


def untraced_ms(step, steps: int) -> float:
  """Median wall ms of `steps` steps without a profiler, after 2 warm-up steps."""
  for _ in range(2):
    step()
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    step()
    times.append(1000 * (time.perf_counter() - t0))
  return round(sorted(times)[len(times) // 2], 2)


def profile_cmjax(jx, steps: int) -> dict:
  """ms per step per category (and thunk counts) of `steps` traced train steps of CmjaxSide."""
  import jax
  table = hlo_thunk_table(jx.step_fn.as_text())
  wall = untraced_ms(jx.step, steps)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        jx.step()
    events = [e for e in trace_events(tmp) if e.get("ph") == "X"]
  ms = collections.defaultdict(float)
  count = collections.Counter()
  for e in events:
    name, dur = e["name"], e.get("dur", 0.0) / 1000.0
    if name in table:
      cat, pass_ = table[name]
      ms[cat] += dur
      ms[f"{cat} ({pass_})"] += dur
      count[cat] += 1
  covered = sum(ms[c] for c in CATEGORIES)
  return {"ms_per_step": {k: round(v / steps, 2) for k, v in sorted(ms.items())},
          "ops_per_step": {k: v // steps for k, v in count.items()},
          "covered_ms_per_step": round(covered / steps, 2),
          "wall_ms_per_step": wall, "thunks_in_hlo": len(table)}


_TORCH_RULES = (("convolution", ("conv",)), ("group norm", ("group_norm",)),
                ("silu", ("silu",)), ("attention + linear", ("mm", "addmm", "bmm", "baddbmm",
                                                            "matmul", "linear", "einsum")),
                ("dropout", ("dropout", "bernoulli", "native_dropout")),
                ("PRNG", ("normal_", "randn", "rand", "random", "get_rng_state", "set_rng_state")),
                ("optimizer + EMA", ("radam", "lerp", "optimizer", "_foreach", "addcdiv", "sqrt_",
                                     "nan_to_num", "zero_grad")))


def torch_category(op: str) -> str:
  o = op.lower()
  for cat, keys in _TORCH_RULES:
    if any(k in o for k in keys):
      return cat
  return "other network"


def profile_torch(th, steps: int) -> dict:
  """ms per step per category (self CPU time of aten ops) of `steps` reference steps."""
  import torch
  wall = untraced_ms(th.step, steps)
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      th.step()
  ms = collections.defaultdict(float)
  count = collections.Counter()
  for ev in prof.key_averages():
    if ev.key.startswith("ProfilerStep") or ev.key.startswith("Optimizer.step"):
      continue  # containers: their ops are counted themselves
    cat = torch_category(ev.key)
    ms[cat] += ev.self_cpu_time_total / 1000.0
    count[cat] += ev.count
  covered = sum(ms.values())
  return {"ms_per_step": {k: round(v / steps, 2) for k, v in sorted(ms.items())},
          "ops_per_step": {k: v // steps for k, v in count.items()},
          "covered_ms_per_step": round(covered / steps, 2), "wall_ms_per_step": wall}


def table_markdown(jx_prof: dict, th_prof: dict) -> str:
  lines = ["| category | cmjax ms/step (ops) | PyTorch ms/step (ops) | cmjax / PyTorch time |",
           "|---|---|---|---|"]
  for cat in CATEGORIES:
    a = jx_prof["ms_per_step"].get(cat, 0.0)
    b = th_prof["ms_per_step"].get(cat, 0.0)
    if a == 0 and b == 0:
      continue
    ratio = f"{a / b:.2f}" if b else "-"
    lines.append(f"| {cat} | {a:.1f} ({jx_prof['ops_per_step'].get(cat, 0)}) | {b:.1f} "
                 f"({th_prof['ops_per_step'].get(cat, 0)}) | {ratio} |")
  for key, label in (("covered_ms_per_step", "sum of operations"),
                     ("wall_ms_per_step", "step wall time without the profiler (median)")):
    lines.append(f"| {label} | {jx_prof[key]:.1f} | {th_prof[key]:.1f} | "
                 f"{jx_prof[key] / th_prof[key]:.2f} |")
  return "\n".join(lines)


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--ect_repo", required=True, help="a locuslab/ect checkout")
  ap.add_argument("--row", default="small")
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--threads", type=int, default=1)
  ap.add_argument("--json", default="")
  args = ap.parse_args(argv)
  import side_by_side as sbs
  sbs.pin_threads(args.threads)
  row = sbs.ROWS[args.row]
  import numpy as np
  images = np.random.default_rng(0).uniform(-1, 1, (row.batch, 32, 32, 3)).astype(np.float32)
  jx = sbs.CmjaxSide(row, images)
  th = sbs.TorchSide(args.ect_repo, row, images, args.threads)
  assert jx.params == th.params, (jx.params, th.params)
  jx_prof, th_prof = profile_cmjax(jx, args.steps), profile_torch(th, args.steps)
  info = sbs.machine_info()
  result = {"row": args.row, "batch": row.batch, "params": jx.params, "threads": args.threads,
            "steps": args.steps, "machine": info, "cmjax": jx_prof, "torch": th_prof}
  print(table_markdown(jx_prof, th_prof))
  emit(result, args.json)


if __name__ == "__main__":
  main()
