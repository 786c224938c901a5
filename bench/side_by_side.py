"""Benchmark: cmjax's ECT train step against the authors' PyTorch code, side by side in one process.

The reference is locuslab/ect (Geng et al., "Consistency Models Made Easy", ICLR 2025), imported
from the checkout the user points to: `training.networks.ECMPrecond` around EDM's `SongUNet`,
`training.loss.ECMLoss` (stage 0 of the curriculum), `torch.optim.RAdam(lr=1e-4, betas=(0.9,
0.999), eps=1e-8)`, the gradient `nan_to_num` and the EMA `lerp` of `training/ct_training_loop.py`
(ema_beta 0.9999), and `generator_fn` for 1-step sampling. cmjax runs `configs/cifar10_ect.py`
(same loss, RAdam, EMA 0.9999, dropout 0.2) with the row's network; both sides get the same
random images. Nothing of the reference is copied here: its code is imported from --ect_repo,
with one run-time shim on CPU (ECMLoss saves and restores the CUDA RNG state to share dropout
masks between its two passes; `torch.cuda.{get,set}_rng_state` are pointed at the CPU generator).

  python bench/side_by_side.py --ect_repo /path/to/ect [--threads 1] [--rows small,mid] \
      [--repeats 20] [--variant rbg,batched_dropout] [--json out.json]

Rows (unconditional 32x32x3 SongUNet, DDPM++ settings, attention at 16x16, dropout 0.2):
  small   16 ch, mult (1,2), 1 block, batch 8 (the `cifar10_ect:smoke` net)
  mid     16 ch, mult (2,2,2), 1 block, batch 8
  wide    64 ch, mult (2,2,2), 2 blocks, batch 16
  full    DDPM++ (128 ch, mult (2,2,2), 4 blocks; 55.7M params), batch 4
  sample  1-step sampling of the `mid` net (forward only, EMA weights), batch 128
Steps alternate A B A B ... (cmjax, PyTorch) after warm-up; each side's per-step wall times give
min / median ms and the speed ratio cmjax/PyTorch = torch_median / cmjax_median (> 1: cmjax is
faster). Threads: both sides are pinned to N cores with the process's CPU affinity (the only
setting that bounds XLA's CPU thread pool; `--xla_cpu_multi_thread_eigen=false` alone still ran
convolutions on 2 threads here), torch.set_num_threads(N), and for N = 1 also XLA's
`--xla_cpu_multi_thread_eigen=false` ('intra_op_parallelism_threads=1' is no XLA flag: XLA_FLAGS
ignores a token without '--'). Each side's busy threads are measured from /proc/self/task
(threads with >= 25% of the busiest one's CPU time) and reported, with its CPU ms per step: on a
machine shared with other jobs the wall time stretches with the load, the CPU time much less, so
the CPU-time ratio is the steadier comparison at 1 thread.
`--variant` monkeypatches the cmjax side for profiling (nothing in cmjax/ changes):
  rbg              jax_default_prng_impl = 'rbg' (instead of threefry)
  unsafe_rbg       jax_default_prng_impl = 'unsafe_rbg'
  batched_dropout  the backbone called once on the batch with one dropout key (no per-example
                   vmap; masks then depend on the batch split, so this is a measurement only)
  no_dropout       model.dropout = 0 on BOTH sides (what dropout itself costs)
`--xla_flags` appends candidate XLA flags; `--breakdown` times the step's parts on both sides
(training forward, eval forward, loss + gradient, RAdam + EMA update).
This is a benchmark, never a test: CI has no torch.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "bench")):
  if _p not in sys.path:
    sys.path.insert(0, _p)

# The reference side and the CPU meters live in their own files (re-exported: gpu_check.py and
# profile_ops.py use them through this module).
from cpu_meter import ThreadMeter, machine_info, pin_threads, stats_ms, thread_ticks  # noqa: E402,F401
from ect_reference import DROPOUT, EMA_BETA, TorchSide, import_reference, shim_cuda_rng  # noqa: E402,F401


@dataclasses.dataclass(frozen=True)
class Row:
  """One benchmark row: a SongUNet (DDPM++ settings) at a batch size; kind 'train' or 'sample'."""
  name: str
  channels: int
  mult: tuple
  blocks: int
  batch: int
  kind: str = "train"
  attn: tuple = (16,)


ROWS = {
    "small": Row("small", 16, (1, 2), 1, 8),
    "mid": Row("mid", 16, (2, 2, 2), 1, 8),
    "wide": Row("wide", 64, (2, 2, 2), 2, 16),
    "full": Row("full", 128, (2, 2, 2), 4, 4),
    "sample": Row("sample", 16, (2, 2, 2), 1, 128, kind="sample"),
}
VARIANTS = ("rbg", "unsafe_rbg", "batched_dropout", "no_dropout")


def parse_list(text: str, known, what: str) -> list:
  """Comma-separated names of `known`, in order; an unknown one raises ConfigError."""
  from cmjax.errors import ConfigError
  names = [t for t in text.split(",") if t]
  bad = [t for t in names if t not in known]
  if bad:
    raise ConfigError(f"unknown {what} {bad[0]!r}; known: {', '.join(known)}")
  return names


def ect_config_module():
  """The module of configs/cifar10_ect.py (cmjax.configs, or ./configs in the older layout)."""
  try:
    from cmjax.configs import cifar10_ect
  except ImportError:  # the layout before configs/ moved into the package
    import importlib
    cifar10_ect = importlib.import_module("configs.cifar10_ect")
  return cifar10_ect


def cmjax_config(row: Row, no_dropout: bool = False):
  """configs/cifar10_ect.py (the paper's ECT settings) with the row's SongUNet and batch."""
  c = ect_config_module().get_config("smoke")  # smoke only shrinks the net and the run length
  c.model.update(model_channels=row.channels, channel_mult=tuple(row.mult), num_blocks=row.blocks,
                 attn_resolutions=tuple(row.attn), dropout=0.0 if no_dropout else DROPOUT)
  c.train.update(batch_size=row.batch)
  c.eval.update(batch_size=row.batch)
  return c


def apply_variants(variants) -> None:
  """Monkeypatches for --variant (cmjax/ itself is untouched); call before cmjax builds."""
  import jax
  if "rbg" in variants:
    jax.config.update("jax_default_prng_impl", "rbg")
  if "unsafe_rbg" in variants:
    jax.config.update("jax_default_prng_impl", "unsafe_rbg")
  if "batched_dropout" in variants:
    import importlib
    from cmjax import parametrization
    original = parametrization.make_model_fn

    def make_model_fn(model, precond, compute_dtype=None):
      fn = original(model, precond, compute_dtype)

      def batched(params, x, t, dropout_keys=None, labels=None, t2=None):
        if dropout_keys is None:
          return fn(params, x, t, None, labels, t2)
        net = lambda x_in, c_noise: model.apply({"params": params}, x_in, c_noise, train=True,
                                                rngs={"dropout": dropout_keys[0]})
        return precond(net, x, t)
      return batched
    for name in ("cmjax.builders", "cmjax.run"):  # where the step's model_fn is made
      try:
        module = importlib.import_module(name)
      except ImportError:
        continue
      if hasattr(module, "make_model_fn"):
        module.make_model_fn = make_model_fn


class CmjaxSide:
  """cmjax's jitted (AOT-compiled) ECT train step, or its 1-step sampler, for one row."""

  def __init__(self, row: Row, images, variants=()):
    import jax
    import numpy as np
    from cmjax.run import Run, stream_key
    self.row = row
    config = cmjax_config(row, "no_dropout" in variants)
    self.run = Run(config)
    self.state = self.run.init_state()
    self.params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.state.params)))
    self.key = stream_key(config.seed, "train")
    if row.kind == "train":
      self.step_fn, self.compile_s, self.memory = self.run.compile_train_step()
      self.batch = self.run.device_batch({"image": np.asarray(images, np.float32)})
      cost = self.step_fn.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      self.flops = float(cost.get("flops", 0.0)) if cost else 0.0
    else:
      self.spec = dict(self.run.named_samplers)["1step"]
      t0 = time.perf_counter()
      self.run.generate(self.state.ema_params, row.batch, self.spec)
      self.compile_s, self.memory, self.flops = time.perf_counter() - t0, {}, 0.0

  def step(self) -> None:
    """One train step (or one 1-step sampling batch), blocked until done."""
    import jax
    if self.row.kind == "train":
      self.state, m = self.step_fn(self.state, self.batch, self.key)
      jax.block_until_ready(m)
    else:
      self.run.generate(self.state.ema_params, self.row.batch, self.spec)

  def loss(self) -> float:
    """The last step's loss (train rows), to show both sides train on finite numbers."""
    self.state, m = self.step_fn(self.state, self.batch, self.key)
    return float(m["loss"])


def run_row(row: Row, ect_repo: str, repeats: int, warmup: int, threads: int, variants=()) -> dict:
  """Times one row interleaved (cmjax, torch, cmjax, torch, ...); returns its result dict."""
  import numpy as np
  from cmjax.errors import ConfigError
  images = np.random.default_rng(0).uniform(-1, 1, (row.batch, 32, 32, 3)).astype(np.float32)
  jx = CmjaxSide(row, images, variants)
  th = TorchSide(ect_repo, row, images, threads, no_dropout="no_dropout" in variants)
  if jx.params != th.params:
    raise ConfigError(f"row {row.name}: cmjax has {jx.params} parameters, the reference {th.params}")
  print(f"[{row.name}] params cmjax {jx.params:,} = torch {th.params:,}; cmjax compile "
        f"{jx.compile_s:.1f}s", flush=True)
  for _ in range(warmup):
    jx.step()
    th.step()
  mj, mt = ThreadMeter(), ThreadMeter()
  tj, tt = [], []
  for _ in range(repeats):
    tj.append(mj.time(jx.step))
    tt.append(mt.time(th.step))
  result = {"row": row.name, "kind": row.kind, "batch": row.batch, "model_channels": row.channels,
            "channel_mult": list(row.mult), "num_blocks": row.blocks, "params": jx.params,
            "variants": list(variants), "cmjax": {**stats_ms(tj), **mj.summary(),
                                                 "compile_s": round(jx.compile_s, 2),
                                                 "xla_flops_per_step": jx.flops},
            "torch": {**stats_ms(tt), **mt.summary()}}
  result["speed_ratio_cmjax_over_torch"] = round(result["torch"]["median_ms"]
                                                 / result["cmjax"]["median_ms"], 3)
  result["cpu_time_ratio_cmjax_over_torch"] = round(result["torch"]["cpu_ms"]
                                                    / max(result["cmjax"]["cpu_ms"], 1e-9), 3)
  if row.kind == "train":
    result["cmjax"]["loss"], result["torch"]["loss"] = jx.loss(), th.loss()
  return result


def breakdown(row: Row, ect_repo: str, repeats: int, threads: int, variants=()) -> dict:
  """Median ms of the parts of a train step on both sides, interleaved (where the time goes):
  fwd_train (one training-mode forward with dropout: cmjax's per-example vmap), fwd_eval (one
  forward without dropout; cmjax: batched), loss_grad (the ECT loss, both passes, and its
  gradient), update (RAdam + EMA; torch also the gradient nan_to_num)."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from cmjax.train_step import example_keys
  images = np.random.default_rng(0).uniform(-1, 1, (row.batch, 32, 32, 3)).astype(np.float32)
  jx = CmjaxSide(row, images, variants)
  th = TorchSide(ect_repo, row, images, threads, no_dropout="no_dropout" in variants)
  run, state, torch = jx.run, jx.state, th.torch
  x = jnp.asarray(images)
  t = jnp.exp(jnp.linspace(-3.0, 2.0, row.batch))
  keys = example_keys(jx.key, jnp.int32(0), row.batch)
  mf, obj, opt = run.model_fn, run.objective, run.optimizer
  frozen = {"target": None, "teacher": None, "distance": None, "aux": {}}
  fwd_train = jax.jit(lambda p, x, t, k: mf(p, x, t, k))
  fwd_eval = jax.jit(lambda p, x, t: mf(p, x, t))
  loss_grad = jax.jit(jax.value_and_grad(
      lambda p, x, k: jnp.mean(obj(mf, p, x, k, jnp.int32(0), frozen)[0])))
  mu = run.config.train.ema_rate

  def upd(params, ema, opt_state, grads):
    updates, opt_state = opt.update((grads, {}), opt_state, (params, {}))
    new, _ = optax.apply_updates((params, {}), updates)
    return new, jax.tree.map(lambda e, q: mu * e + (1.0 - mu) * q, ema, new), opt_state
  update = jax.jit(upd)
  grads = jax.tree.map(jnp.ones_like, state.params)
  jparts = {"fwd_train": lambda: fwd_train(state.params, x, t, keys),
            "fwd_eval": lambda: fwd_eval(state.params, x, t),
            "loss_grad": lambda: loss_grad(state.params, x, keys),
            "update": lambda: update(state.params, state.ema_params, state.opt_state, grads)}
  xt = th.images
  tt = torch.exp(torch.linspace(-3.0, 2.0, row.batch))

  def t_update():
    for p in th.net.parameters():
      if p.grad is None:
        p.grad = torch.ones_like(p)
      torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)
    th.opt.step()
    with torch.no_grad():
      for p_ema, p_net in zip(th.ema.parameters(), th.net.parameters()):
        p_ema.copy_(p_net.detach().lerp(p_ema, EMA_BETA))

  def t_loss_grad():
    th.opt.zero_grad(set_to_none=True)
    th.loss_fn(net=th.net, images=xt, labels=None).mean().backward()

  def t_fwd_eval():
    with torch.no_grad():
      th.ema(xt, tt)
  tparts = {"fwd_train": lambda: th.net(xt, tt), "fwd_eval": t_fwd_eval,
            "loss_grad": t_loss_grad, "update": t_update}
  out = {}
  for name in jparts:
    block = lambda f=jparts[name]: jax.block_until_ready(f())
    for _ in range(2):
      block()
      tparts[name]()
    tj, tt_ = [], []
    for _ in range(repeats):
      w0 = time.perf_counter()
      block()
      tj.append(time.perf_counter() - w0)
      w0 = time.perf_counter()
      tparts[name]()
      tt_.append(time.perf_counter() - w0)
    out[name] = {"cmjax_ms": stats_ms(tj)["median_ms"], "torch_ms": stats_ms(tt_)["median_ms"]}
    print(f"[{row.name} breakdown] {name}: {out[name]}", flush=True)
  return {"row": row.name, "batch": row.batch, "variants": list(variants), "parts": out}


def markdown_table(results: list, header: dict) -> str:
  """A short markdown table of the rows' results."""
  lines = [f"Threads {header['threads']}; {header['machine']['cpu']} ({header['machine']['cores']} "
           f"cores, load {header['machine']['loadavg'][0]:.1f} at start); jax {header['jax']}, "
           f"torch {header['torch']}.", "",
           "| row | batch | params | variants | cmjax min / median ms | torch min / median ms | "
           "speed cmjax/torch | CPU ms/step jax / torch (ratio) | busy threads jax/torch |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    j, t = r["cmjax"], r["torch"]
    lines.append(f"| {r['row']} | {r['batch']} | {r['params']:,} | {'+'.join(r['variants']) or '-'} | "
                 f"{j['min_ms']} / {j['median_ms']} | {t['min_ms']} / {t['median_ms']} | "
                 f"{r['speed_ratio_cmjax_over_torch']} | {j['cpu_ms']} / {t['cpu_ms']} "
                 f"({r['cpu_time_ratio_cmjax_over_torch']}) | {j['busy_threads']}/{t['busy_threads']} |")
  return "\n".join(lines) + "\n"


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--ect_repo", required=True, help="a locuslab/ect checkout")
  ap.add_argument("--threads", type=int, default=1)
  ap.add_argument("--rows", default="small,mid,wide,full,sample")
  ap.add_argument("--repeats", type=int, default=20, help="timed steps per side")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--variant", default="", help=f"cmjax-side patches: {', '.join(VARIANTS)}")
  ap.add_argument("--json", default="", help="write the results here (default bench/results/...)")
  ap.add_argument("--markdown", default="", help="also write a markdown table here")
  ap.add_argument("--cache_dir", default="", help="jax's persistent compilation cache (reruns)")
  ap.add_argument("--xla_flags", default="", help="appended to XLA_FLAGS (e.g. candidate flags)")
  ap.add_argument("--label", default="", help="free text stored in the JSON (e.g. the commit)")
  ap.add_argument("--breakdown", action="store_true",
                  help="time the parts of the step (forward, loss+grad, update) instead")
  args = ap.parse_args(argv)
  pin_threads(args.threads)
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  rows = [ROWS[n] for n in parse_list(args.rows, tuple(ROWS), "row")]
  variants = parse_list(args.variant, VARIANTS, "variant")
  machine = machine_info()
  apply_variants(variants)
  import jax
  import torch
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  header = {"machine": machine, "threads": args.threads, "jax": jax.__version__,
            "torch": torch.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "repeats": args.repeats, "warmup": args.warmup, "interleaved": True,
            "ect_repo": os.path.abspath(args.ect_repo), "label": args.label}
  if args.breakdown:
    parts = [breakdown(r, args.ect_repo, args.repeats, args.threads, variants) for r in rows
             if r.kind == "train"]
    path = args.json or os.path.join(ROOT, "bench", "results",
                                     f"side_by_side_breakdown_cpu{args.threads}.json")
    with open(path, "w") as f:
      json.dump({**header, "breakdown": parts}, f, indent=2)
    return
  results = []
  for row in rows:
    r = run_row(row, args.ect_repo, args.repeats, args.warmup, args.threads, variants)
    r["loadavg_after"] = list(os.getloadavg())
    results.append(r)
    print(json.dumps(r), flush=True)
  out = {**header, "results": results}
  path = args.json or os.path.join(ROOT, "bench", "results",
                                   f"side_by_side_cpu{args.threads}"
                                   f"{'_' + '_'.join(variants) if variants else ''}.json")
  with open(path, "w") as f:
    json.dump(out, f, indent=2)
  table = markdown_table(results, header)
  print(table)
  if args.markdown:
    with open(args.markdown, "w") as f:
      f.write(table)


if __name__ == "__main__":
  main()
