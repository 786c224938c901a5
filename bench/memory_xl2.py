"""XLA's memory analysis of the MeanFlow DiT-XL/2 train step at ImageNet 256 (compile only).

  python bench/memory_xl2.py [--batches 32] [--remat both] [--precision fp32] [--out FILE.md]

For each per-device batch and remat setting, one subprocess builds configs/imagenet256_meanflow_xl2
on ONE device (the per-device program: data parallelism replicates it, the batch split), lowers
the jitted train step (state donated, as cmjax.run does) on abstract shapes
(jax.ShapeDtypeStruct: nothing is allocated) and prints compiled.memory_analysis() in MiB:
arguments (parameters, EMA, Adam moments, batch), outputs, temporaries (activations kept for the
backward pass and the jvp's tangents, workspace), generated code, aliased (donated) bytes and
total = argument + output + temp + code - alias, the device memory the step needs at its peak
by XLA's buffer assignment. Also the compile's peak host RSS. On the CPU backend these numbers
approximate an accelerator's: fusion and layout choices differ per backend (GPU/TPU
rematerialise and fuse differently), so treat them as +-20%, not a guarantee.

The data set and VAE are mocks in a temporary folder (the step's memory does not depend on their
values); --batches with two or more values also prints the per-example slope of temp and total,
so a batch too big to compile here can be extrapolated linearly (temp grows with the batch; the
state does not).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))


def _mock_paths(tmp: str) -> dict:
  """A 64-record mock latent data set and an SD-config VAE file (an empty .npz: only its .json is
  read by validation; nothing here loads the VAE)."""
  import numpy as np
  from _latent_data import mock_latents
  from cmjax.models.vae import sd_vae
  from cmjax.weights.vae_diffusers import vae_config

  mock_latents(os.path.join(tmp, "lat"), 64, resolution=256, classes=1000, shard=64)
  np.savez(os.path.join(tmp, "vae.npz"))
  with open(os.path.join(tmp, "vae.json"), "w") as f:
    json.dump({"_class_name": "AutoencoderKL", **vae_config(sd_vae())}, f)
  return {"path": os.path.join(tmp, "lat"), "vae_weights": os.path.join(tmp, "vae.npz")}


def measure(batch: int, remat: bool, precision: str) -> dict:
  """One compile: the memory analysis (MiB) of the XL/2 MeanFlow step at per-device `batch`."""
  import jax
  import jax.numpy as jnp

  from cmjax import checkpointing, parallel
  from cmjax.builders import build
  from cmjax.configs import imagenet256_meanflow_xl2
  from cmjax.run import memory_report
  from cmjax.train_step import make_train_step

  c = imagenet256_meanflow_xl2.get_config()
  with tempfile.TemporaryDirectory() as tmp:
    c.data.update(**_mock_paths(tmp))
    c.train.update(batch_size=batch, precision=precision)
    c.model.remat = remat
    mesh = parallel.make_data_mesh(jax.devices()[:1])
    built = build(c, mesh)
  step = make_train_step(built.model_fn, built.objective, built.optimizer, built.durations.ema,
                         lr_schedule=built.durations.lr_schedule)
  abstract = built.abstract_state()
  shard = built.state_sharding(abstract)
  rep = parallel.replicated(mesh)
  jitted = jax.jit(step, in_shardings=(shard, built.batch_sharding, rep),
                   out_shardings=(shard, rep), donate_argnums=0)
  batch_struct = {"image": jax.ShapeDtypeStruct((batch, 32, 32, 4), jnp.float32,
                                                sharding=built.batch_sharding["image"]),
                  "label": jax.ShapeDtypeStruct((batch,), jnp.int32,
                                                sharding=built.batch_sharding["label"])}
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=rep)
  state = checkpointing.abstract_with_shardings(abstract, shard)
  compiled = jitted.lower(state, batch_struct, key).compile()
  params = sum(int(a.size) for a in jax.tree.leaves(abstract.params))
  return {"batch": batch, "remat": remat, "precision": precision, "params": params,
          "backend": jax.default_backend(), **memory_report(compiled),
          "compile_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--batches", default="32", help="per-device batches, comma-separated")
  ap.add_argument("--remat", default="both", choices=("both", "on", "off"))
  ap.add_argument("--precision", default="fp32")
  ap.add_argument("--out", default="", help="append the table to this markdown file")
  ap.add_argument("--one", default="", help=argparse.SUPPRESS)  # 'batch,remat' in a subprocess
  args = ap.parse_args()
  if args.one:
    b, r = args.one.split(",")
    print(json.dumps(measure(int(b), r == "1", args.precision)))
    return
  remats = {"both": (False, True), "on": (True,), "off": (False,)}[args.remat]
  rows = []
  for remat in remats:
    for b in (int(v) for v in args.batches.split(",")):
      out = subprocess.run([sys.executable, __file__, "--one", f"{b},{int(remat)}",
                            "--precision", args.precision], capture_output=True, text=True)
      if out.returncode:
        sys.exit(f"memory_xl2: batch {b} remat {remat} failed: {out.stderr.strip()[-500:]}")
      rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(json.dumps(rows[-1]), flush=True)
  lines = ["| per-device batch | remat | argument | output | temp | alias | total (MiB) | "
           "compile RSS (MiB) |", "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r['batch']} | {'on' if r['remat'] else 'off'} | {r['argument']:.0f} | "
                 f"{r['output']:.0f} | {r['temp']:.0f} | {r['alias']:.0f} | {r['total']:.0f} | "
                 f"{r['compile_peak_rss_mib']} |")
  for remat in remats:  # linear fit in the batch from the two extreme batches measured
    pts = sorted((r["batch"], r["temp"], r["total"]) for r in rows if r["remat"] == remat)
    if len(pts) >= 2 and pts[-1][0] > pts[0][0]:
      (b0, t0, s0), (b1, t1, s1) = pts[0], pts[-1]
      slope = (t1 - t0) / (b1 - b0)
      lines.append(f"\nremat {'on' if remat else 'off'}: temp ~ {t0 - slope * b0:.0f} + "
                   f"{slope:.1f} MiB x batch; total at batch 32 ~ "
                   f"{s0 + (s1 - s0) / (b1 - b0) * (32 - b0):.0f} MiB (linear in the batch)")
  text = "\n".join(lines)
  print(text)
  if args.out:
    with open(args.out, "a") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  main()
