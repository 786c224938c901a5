"""scripts/ablate.py: planning, command lines, shared runs, tables and the doc block (no training)."""
import json
import os
import sys

import pytest

from tests._helpers import load_script

ablate = load_script("ablate")

SWEEP = {
    "config": "digits_ect", "common": {"train.num_steps": 900},
    "axes": {"ema": {"default": {}, "0.99": {"train.ema_rate": 0.99}},
             "init": {"default": {}, "tuned": {"train.init_workdir": "@edm", "ect.initial_exponent": 1}},
             "ct": {"default": {}, "ct": {"config": "digits_ct", "ct.distance": "l2"}}},
    "prerequisites": {"edm": {"config": "digits_edm", "train.num_steps": 600}},
}


def _write(tmp_path, sweep=SWEEP):
  p = tmp_path / "sweep.json"
  p.write_text(json.dumps(sweep))
  return str(p)


def test_plan_shares_runs_and_resolves_prerequisites(tmp_path):
  sweep = ablate.load_sweep(_write(tmp_path))
  pre, jobs, cells = ablate.plan(sweep, [0, 1], str(tmp_path / "r"), [])
  assert len(pre) == 2  # the EDM run, per seed
  # default appears in three axes but runs once per seed: 2 x (default, 0.99, tuned, ct).
  assert len(jobs) == 8
  assert cells[("ema", "default")] == cells[("init", "default")]
  tuned = [c for c, wd in jobs if wd in cells[("init", "tuned")]]
  for seed, cmd in zip([0, 1], tuned):
    assert f"--config.seed={seed}" in cmd
    init = [a for a in cmd if a.startswith("--config.train.init_workdir=")][0].split("=", 1)[1]
    assert init == pre[seed][1]  # the prerequisite of the same seed
  ct = [c for c, wd in jobs if wd in cells[("ct", "ct")]][0]
  assert ct[ct.index("--config") + 1] == "digits_ct" and "--config.ct.distance=l2" in ct
  assert "--config.train.num_steps=900" in ct  # common overrides reach every row
  # Names are stable and differ by every setting and by seed.
  names = [os.path.basename(wd) for _, wd in jobs]
  assert len(set(names)) == len(names)
  assert ablate.plan(sweep, [0, 1], str(tmp_path / "r"), [])[1] == jobs


def test_only_selects_axes_and_drops_unused_prerequisites(tmp_path):
  sweep = ablate.load_sweep(_write(tmp_path))
  pre, jobs, cells = ablate.plan(sweep, [0], str(tmp_path), ["ema"])
  assert pre == [] and len(jobs) == 2 and set(a for a, _ in cells) == {"ema"}


def test_only_takes_axis_names_with_commas(tmp_path, capsys):
  sweep = dict(SWEEP, axes={"lr (Muon, 900 steps)": {"default": {}, "2e-3": {"optim.lr": 0.002}},
                            "ema": SWEEP["axes"]["ema"], "init": SWEEP["axes"]["init"]})
  path = _write(tmp_path, sweep)
  ablate.main([path, "--seeds", "0", "--root", str(tmp_path), "--dry", "--only", "lr (Muon, 900 steps)",
               "--only", "ema"])
  out = capsys.readouterr().out
  assert "optim.lr=0.002" in out and "ema_rate=0.99" in out and "digits_edm" not in out


def test_flag_values():
  assert ablate._flag_value(True) == "True"
  assert ablate._flag_value((1, 2)) == "(1,2)" and ablate._flag_value([3]) == "(3,)"


def test_bad_sweeps_are_one_line(tmp_path):
  with pytest.raises(SystemExit, match="refers to '@nope'"):
    ablate.load_sweep(_write(tmp_path, {"config": "digits_ect", "axes": {"a": {"x": {"train.init_workdir": "@nope"}}}}))
  with pytest.raises(SystemExit, match="must be a JSON object"):
    ablate.load_sweep(_write(tmp_path, {"axes": {}}))
  with pytest.raises(SystemExit, match="unknown axes"):
    ablate.main([_write(tmp_path), "--only", "lr", "--dry"])


def test_tables_mean_std_and_unequal_images(tmp_path):
  sweep = {"config": "digits_ect", "axes": {"batch": {"default": {}, "b128": {"train.batch_size": 128}}}}
  _, jobs, cells = ablate.plan(sweep, [0, 1, 2], str(tmp_path), [])
  fds = {"default": [10.0, 12.0, 14.0], "b128": [8.0, 9.0]}  # one b128 seed unfinished
  for label, vals in fds.items():
    for wd, v in zip(cells[("batch", label)], vals):
      os.makedirs(wd)
      imgs = 1000 if label == "default" else 2000
      json.dump({"fd_digits_1step": v, "fd_digits_2step": v / 2, "train_seconds": 60.0,
                 "images_seen": imgs}, open(os.path.join(wd, "summary.json"), "w"))
  text = ablate.tables(sweep, cells)
  assert "| default | 12.00 ± 2.00 | 6.00 ± 1.00 | 60 ± 0 | 1000 | 3/3 |" in text
  assert "| b128 | 8.50 ± 0.71 | 4.25 ± 0.35 | 60 ± 0 | 2000 (≠) | 2/3 |" in text
  # A finished run is never run again.
  assert ablate.run_one(["false"], cells[("batch", "default")][0], None)[1:] == (True, 0.0)


def test_doc_block_is_replaced_and_the_rest_kept(tmp_path):
  doc = str(tmp_path / "d.md")
  open(doc, "w").write("# Study\n\nconclusions stay\n")
  ablate.write_doc(doc, "digits_ect", "table one")
  ablate.write_doc(doc, "digits_ect", "table two")
  text = open(doc).read()
  assert text.count("<!-- ablate:digits_ect:begin -->") == 1 and "table two" in text
  assert "table one" not in text and text.startswith("# Study\n\nconclusions stay\n")


def test_a_failed_run_names_its_last_log_line(tmp_path):
  wd = str(tmp_path / "run")
  cmd = [sys.executable, "-c", "import sys; print('cmjax: error: bad thing'); sys.exit(2)"]
  assert ablate.run_one(cmd, wd, None)[1] is False
  assert ablate._last_line(wd + ".log") == "cmjax: error: bad thing"


def test_the_ledger_keeps_results_when_run_directories_are_gone(tmp_path):
  sweep_path = _write(tmp_path, {"config": "digits_ect", "axes": {"lr": {"default": {}, "2e-3": {"optim.lr": 0.002}}}})
  sweep = ablate.load_sweep(sweep_path)
  root = tmp_path / "runs"
  _, jobs, cells = ablate.plan(sweep, [0, 1], str(root), [])
  for i, (_, wd) in enumerate(jobs):
    os.makedirs(wd)
    json.dump({"fd_digits_1step": 10.0 + i, "fd_digits_2step": 5.0, "train_seconds": 60.0, "images_seen": 100,
               "method": "ect"}, open(os.path.join(wd, "summary.json"), "w"))
  ledger = str(tmp_path / "results" / "sweep.jsonl")
  assert ablate.main([sweep_path, "--seeds", "0,1", "--root", str(root), "--report"]) == 0
  recs = ablate.read_ledger(ledger)
  assert len(recs) == 4 and all("method" not in r["summary"] for r in recs.values())
  rec = recs[os.path.basename(cells[("lr", "2e-3")][1])]
  assert rec["seed"] == 1 and "--config.optim.lr=0.002" in rec["flags"]
  assert not any(str(root) in f for f in rec["flags"])  # no machine paths
  before = ablate.tables(sweep, cells)
  import shutil
  shutil.rmtree(root)  # the machine is gone; the ledger is committed
  assert ablate.tables(sweep, cells) != before  # without the ledger: nothing
  assert ablate.tables(sweep, cells, ablate.read_ledger(ledger)) == before
  # A recorded run is not run again: --dry lists nothing to run.
  import contextlib, io
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ablate.main([sweep_path, "--seeds", "0,1", "--root", str(root), "--dry"])
  assert out.getvalue() == ""
  open(ledger, "a").write("not json\n")
  with pytest.raises(SystemExit, match="sweep.jsonl:5 is not a ledger record"):
    ablate.read_ledger(ledger)


def test_shipped_sweeps_and_ledgers_load(tmp_path):
  import glob
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  paths = sorted(glob.glob(os.path.join(root, "sweeps", "*.json")))
  assert paths
  for p in paths:
    sweep = ablate.load_sweep(p)
    ablate.plan(sweep, [0, 1, 2], str(tmp_path), [])
  for p in glob.glob(os.path.join(root, "sweeps", "results", "*.jsonl")):
    assert os.path.exists(os.path.join(root, "sweeps", os.path.basename(p)[:-1]))  # NAME.jsonl <- NAME.json
    for rec in ablate.read_ledger(p).values():
      assert {"run", "seed", "flags", "summary"} <= set(rec) and "fd_digits_1step" in rec["summary"]
