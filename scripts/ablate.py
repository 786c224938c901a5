"""Ablation sweeps: config overrides x seeds, run in parallel, summarised as mean ± std tables.

  python scripts/ablate.py sweeps/digits_ect.json --seeds 0,1,2 --jobs 2 --root runs/ablation \
      --doc docs/digits_ablation.md
  python scripts/ablate.py sweeps/digits_ect.json --seeds 0,1,2 --root runs/ablation --only ema --dry

A sweep file (JSON) names a packaged config (or a path), overrides common to every run, and
axes, each a table of labelled settings:

  {"config": "digits_ect",
   "common": {"train.num_steps": 900},
   "metrics": ["fd_digits_1step", "fd_digits_2step"],
   "reference": "default",
   "axes": {"ema": {"default": {}, "0.99": {"train.ema_rate": 0.99}}},
   "prerequisites": {"edm600": {"config": "digits_edm", "train.num_steps": 600}}}

- Each (settings, seed) runs once, in ROOT/<config>-<settings>-s<seed>/, as
  `python -m cmjax.cli --config ... --workdir ... --config.seed=SEED --config.KEY=VALUE`; a run
  whose summary.json exists is not run again (so a sweep resumes, and the same settings in two
  axes are one run).
- "config" inside a setting runs another config (e.g. CT beside ECT); a string value "@NAME"
  is the workdir of prerequisite NAME at the same seed (e.g. "train.init_workdir": "@edm600"),
  run first.
- `--jobs N` runs N at once, each pinned to its own CPU core (Linux) with one XLA thread, so the
  runs do not fight over cores and their train_seconds compare.
- The table: mean ± sample std over seeds of each metric and of train_seconds, the images seen
  (a row whose images differ from the axis's reference row is marked), and how many seeds
  finished. `--doc FILE` writes the tables between the markers `<!-- ablate:NAME:begin -->` and
  `<!-- ablate:NAME:end -->` of FILE (NAME = the sweep file's stem), leaving the rest of the
  file (the conclusions) as it is.
- The results outlive the run directories: every finished run's numbers (the top-level numbers
  of its summary.json, with its settings and seed) are kept in a ledger, by default
  `results/NAME.jsonl` beside the sweep file, meant to be committed. A run found in the ledger
  is not run again, and the tables read the ledger where a run directory is gone.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time

RESERVED = ("config",)


def load_sweep(path: str) -> dict:
  """The sweep file, checked: one line naming the problem on bad input."""
  with open(path) as f:
    sweep = json.load(f)
  if not isinstance(sweep, dict) or "config" not in sweep or not isinstance(sweep.get("axes"), dict):
    raise SystemExit(f"ablate: error: {path} must be a JSON object with 'config' and 'axes'")
  for axis, rows in sweep["axes"].items():
    if not isinstance(rows, dict) or not rows:
      raise SystemExit(f"ablate: error: axis {axis!r} must map labels to override objects")
    for label, ov in rows.items():
      if not isinstance(ov, dict):
        raise SystemExit(f"ablate: error: {axis!r}/{label!r} must be an object of overrides")
      for v in ov.values():
        if isinstance(v, str) and v.startswith("@") and v[1:] not in sweep.get("prerequisites", {}):
          raise SystemExit(f"ablate: error: {axis!r}/{label!r} refers to {v!r}, not in 'prerequisites'")
  return sweep


def settings_of(sweep: dict, overrides: dict) -> dict:
  """The full override set of one row: config name + common overrides + the row's."""
  merged = {"config": sweep["config"], **sweep.get("common", {}), **overrides}
  return dict(sorted(merged.items()))


def run_name(settings: dict, seed: int, own: dict) -> str:
  """A stable workdir name: the config, a readable slug of the row's own overrides `own` and a
  short hash of every setting (so common overrides change the name too)."""
  ov = {k: v for k, v in own.items() if k not in RESERVED}
  slug = "_".join(f"{k.split('.')[-1]}={str(v).lstrip('@')}" for k, v in ov.items())
  slug = re.sub(r"[^A-Za-z0-9=._-]+", "", slug)[:60] or "default"
  h = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
  return f"{os.path.basename(str(settings['config']))}-{slug}-{h}-s{seed}"


def _flag_value(v) -> str:
  if isinstance(v, bool):
    return "True" if v else "False"
  if isinstance(v, (list, tuple)):
    return "(" + ",".join(_flag_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
  return str(v)


def command(settings: dict, seed: int, workdir: str, prereq_dirs: dict) -> list[str]:
  """The cmjax command line of one run."""
  cmd = [sys.executable, "-m", "cmjax.cli", "--config", str(settings["config"]),
         "--workdir", workdir, f"--config.seed={seed}"]
  for k, v in settings.items():
    if k in RESERVED:
      continue
    if isinstance(v, str) and v.startswith("@"):
      v = prereq_dirs[v[1:]]
    cmd.append(f"--config.{k}={_flag_value(v)}")
  return cmd


def _pin(core: int | None):
  def pre():
    if core is not None and hasattr(os, "sched_setaffinity"):
      os.sched_setaffinity(0, {core})
  return pre


def run_one(cmd: list[str], workdir: str, core: int | None) -> tuple[str, bool, float]:
  """Runs one job to completion (logs to WORKDIR.log); True if summary.json appeared."""
  if os.path.exists(os.path.join(workdir, "summary.json")):
    return workdir, True, 0.0
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
  t0 = time.time()
  with open(workdir.rstrip("/") + ".log", "w") as log:
    log.write(" ".join(cmd) + "\n")
    log.flush()
    subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_pin(core))
  return workdir, os.path.exists(os.path.join(workdir, "summary.json")), time.time() - t0


def _last_line(path: str) -> str:
  with open(path, errors="replace") as f:
    lines = [ln.strip() for ln in f.read().replace("\r", "\n").splitlines() if ln.strip()]
  return lines[-1] if lines else "(empty log)"


def run_all(jobs: list[tuple[list[str], str]], n_jobs: int) -> None:
  """Runs (cmd, workdir) pairs, n_jobs at a time, each on its own core."""
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  free = list(cores[:n_jobs]) if len(cores) >= n_jobs > 1 else [None] * n_jobs
  with cf.ThreadPoolExecutor(n_jobs) as pool:
    pending, queue = {}, list(jobs)
    while queue or pending:
      while queue and free:
        cmd, wd = queue.pop(0)
        core = free.pop(0)
        pending[pool.submit(run_one, cmd, wd, core)] = core
      done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
      for fut in done:
        free.append(pending.pop(fut))
        wd, ok, secs = fut.result()
        why = "" if ok else ": " + _last_line(wd.rstrip("/") + ".log")
        print(f"ablate: {'done' if ok else 'FAILED'} {os.path.basename(wd)} ({secs:.0f} s){why}", flush=True)


def plan(sweep: dict, seeds: list[int], root: str, only: list[str]) -> tuple[list, list, dict]:
  """(prerequisite jobs, main jobs, {(axis, label): [workdir per seed]})."""
  prereqs = sweep.get("prerequisites", {})
  root = os.path.abspath(root)  # an "@NAME" workdir must mean the same from any directory
  axes = {a: r for a, r in sweep["axes"].items() if not only or a in only}
  pre_jobs, jobs, cells, seen = [], [], {}, set()
  pre_dirs = {}
  for name, ov in prereqs.items():
    st = dict(sorted({"config": ov.get("config", sweep["config"]), **ov}.items()))
    for s in seeds:
      wd = os.path.join(root, run_name(st, s, {'pre': name}))
      pre_dirs[(name, s)] = wd
      pre_jobs.append((command(st, s, wd, {}), wd))
  for s in seeds:  # seed-major: a sweep stopped early still covers every setting at fewer seeds
    for axis, rows in axes.items():
      for label, ov in rows.items():
        st = settings_of(sweep, ov)
        wd = os.path.join(root, run_name(st, s, ov))
        cells.setdefault((axis, label), []).append(wd)
        if wd not in seen:
          seen.add(wd)
          jobs.append((command(st, s, wd, {n: pre_dirs[(n, s)] for n in prereqs}), wd))
  used = {v[1:] for rows in axes.values() for ov in rows.values() for v in ov.values()
          if isinstance(v, str) and v.startswith("@")}
  pre_jobs = [(c, wd) for c, wd in pre_jobs if any(wd == pre_dirs[(n, s)] for n in used for s in seeds)]
  return pre_jobs, jobs, cells


def _mean_std(xs: list[float]) -> tuple[float, float]:
  m = sum(xs) / len(xs)
  sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else float("nan")
  return m, sd


def _fmt(xs: list[float], digits: int = 2) -> str:
  if not xs:
    return "—"
  m, sd = _mean_std(xs)
  return f"{m:.{digits}f}" if math.isnan(sd) else f"{m:.{digits}f} ± {sd:.{digits}f}"


def read_ledger(path: str) -> dict:
  """{run name: record} from a ledger file (JSON lines; a later line for a run wins)."""
  out = {}
  if path and os.path.exists(path):
    with open(path) as f:
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            rec = json.loads(line)
            out[rec["run"]] = rec
          except (ValueError, KeyError, TypeError):
            raise SystemExit(f"ablate: error: {path}:{n} is not a ledger record (JSON with 'run')")
  return out


def record(path: str, jobs: list[tuple[list[str], str]], seeds_of: dict, root: str = "") -> int:
  """Adds every finished run of `jobs` that the ledger lacks (or holds with other numbers) to
  the ledger at `path`, rewritten atomically; returns how many records were written. The run
  root in a flag (a prerequisite's workdir) is written as ROOT: no machine paths."""
  ledger = read_ledger(path)
  new = 0
  for cmd, wd in jobs:
    p = os.path.join(wd, "summary.json")
    if not os.path.exists(p):
      continue
    with open(p) as f:
      summ = json.load(f)
    nums = {k: v for k, v in summ.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    name = os.path.basename(wd)
    flags = [x for i, x in enumerate(cmd) if x != "--workdir" and (i == 0 or cmd[i - 1] != "--workdir")]
    if root:
      flags = [x.replace(os.path.abspath(root), "ROOT") for x in flags]
    rec = {"run": name, "seed": seeds_of.get(wd), "flags": flags[3:], "summary": nums}
    if ledger.get(name, {}).get("summary") != nums:
      ledger[name] = rec
      new += 1
  if new:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      for name in sorted(ledger):
        f.write(json.dumps(ledger[name], sort_keys=True) + "\n")
    os.replace(tmp, path)
  return new


def summaries(workdirs: list[str], ledger: dict | None = None) -> list[dict]:
  """The summaries of the runs in `workdirs` that finished: summary.json, else the ledger's."""
  out = []
  for wd in workdirs:
    p = os.path.join(wd, "summary.json")
    if os.path.exists(p):
      with open(p) as f:
        out.append(json.load(f))
    elif ledger and os.path.basename(wd) in ledger:
      out.append(ledger[os.path.basename(wd)]["summary"])
  return out


def tables(sweep: dict, cells: dict, ledger: dict | None = None) -> str:
  """Markdown: one table per axis, mean ± std over the finished seeds (run directory or ledger)."""
  metrics = sweep.get("metrics", ["fd_digits_1step", "fd_digits_2step"])
  ref = sweep.get("reference", "default")
  out, axes = [], []
  for axis, _ in cells:
    if axis not in axes:
      axes.append(axis)
  for axis in axes:
    labels = [lab for a, lab in cells if a == axis]
    ref_images = None
    if (axis, ref) in cells:
      s = summaries(cells[(axis, ref)], ledger)
      ref_images = s[0]["images_seen"] if s else None
    out.append(f"#### {axis}\n")
    out.append("| setting | " + " | ".join(metrics) + " | train s | images | seeds |")
    out.append("|---" * (len(metrics) + 4) + "|")
    for lab in labels:
      s = summaries(cells[(axis, lab)], ledger)
      vals = [_fmt([x[m] for x in s if m in x]) for m in metrics]
      imgs = sorted({x["images_seen"] for x in s})
      img = ",".join(str(i) for i in imgs) or "—"
      if ref_images is not None and imgs and imgs != [ref_images]:
        img += " (≠)"
      out.append(f"| {lab} | " + " | ".join(vals) +
                 f" | {_fmt([x['train_seconds'] for x in s], 0)} | {img} | {len(s)}/{len(cells[(axis, lab)])} |")
    out.append("")
  return "\n".join(out)


def write_doc(doc: str, name: str, text: str) -> None:
  """Replaces the marked block `name` of `doc` (appends it if absent), atomically."""
  begin, end = f"<!-- ablate:{name}:begin -->", f"<!-- ablate:{name}:end -->"
  old = open(doc).read() if os.path.exists(doc) else ""
  block = f"{begin}\n{text}\n{end}"
  if begin in old and end in old:
    new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
  else:
    new = old + ("\n" if old and not old.endswith("\n") else "") + block + "\n"
  tmp = doc + ".tmp"
  with open(tmp, "w") as f:
    f.write(new)
  os.replace(tmp, doc)


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("sweep")
  ap.add_argument("--seeds", default="0,1,2")
  ap.add_argument("--jobs", type=int, default=2)
  ap.add_argument("--root", default="runs/ablation")
  ap.add_argument("--only", action="append", default=[],
                  help="axes to run (default: all): repeat the flag, or separate names by commas "
                  "(a name that itself holds commas is matched whole)")
  ap.add_argument("--doc", default="", help="write the tables into this markdown file")
  ap.add_argument("--dry", action="store_true", help="print the commands, run nothing")
  ap.add_argument("--report", action="store_true", help="only collect and print the tables")
  ap.add_argument("--ledger", default="", help="the results ledger (default: results/NAME.jsonl "
                  "beside the sweep file)")
  a = ap.parse_args(argv)
  sweep = load_sweep(a.sweep)
  seeds = [int(s) for s in a.seeds.split(",") if s.strip()]
  only = [n for v in a.only for n in ([v] if v in sweep["axes"] else v.split(",")) if n]
  unknown = [s for s in only if s not in sweep["axes"]]
  if unknown:
    raise SystemExit(f"ablate: error: unknown axes {unknown}; known: {list(sweep['axes'])}")
  pre_jobs, jobs, cells = plan(sweep, seeds, a.root, only)
  name = os.path.splitext(os.path.basename(a.sweep))[0]
  ledger_path = a.ledger or os.path.join(os.path.dirname(os.path.abspath(a.sweep)), "results", name + ".jsonl")
  ledger = read_ledger(ledger_path)
  planned = jobs
  jobs = [(c, wd) for c, wd in jobs if os.path.basename(wd) not in ledger]  # recorded: not run again
  pre_jobs = [(c, wd) for c, wd in pre_jobs if any(f.endswith("=" + wd) for c2, _ in jobs for f in c2)]
  seeds_of = {wd: s for wds in cells.values() for s, wd in zip(seeds, wds)}  # cells are in seed order
  if a.dry:
    for cmd, _ in pre_jobs + jobs:
      print(" ".join(cmd[1:]))
    return 0
  if not a.report:
    os.makedirs(a.root, exist_ok=True)
    run_all(pre_jobs, a.jobs)
    run_all(jobs, a.jobs)
  n = record(ledger_path, planned, seeds_of, a.root)
  if n:
    print(f"ablate: {n} result(s) recorded in {ledger_path}", flush=True)
  text = tables(sweep, cells, read_ledger(ledger_path))
  print(text)
  if a.doc:
    write_doc(a.doc, name, text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
