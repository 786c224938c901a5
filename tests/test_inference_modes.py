"""--mode sample, edit and eval through launch.py on a briefly trained smoke run: outputs,
determinism given the seed, checkpoint and params choice, the t_mid search, exact known pixels
of inpainting, eval.json records (digits-FD, precision/recall; FID through the Inception port in
the long tier), and one-line errors for bad input."""
import json
import os

import numpy as np
import pytest

import launch

# lr 1e-2 without warmup, so that 4 steps move the parameters (raw at step 2 != EMA at step 4)
SMOKE = ["launch.py", "--config", "configs/digits_ect.py:smoke", "--config.optim.warmup_steps=0",
         "--config.optim.lr=0.01"]


@pytest.mark.slow
def test_sample_edit_eval_modes(tmp_path, capsys):
  """One test (one training run, one xdist worker) for the three modes."""
  wd = tmp_path / "run"
  # 4 steps, checkpoints 2 and 4; the modes below evaluate, so the run itself does not
  assert launch.main(SMOKE + ["--workdir", str(wd), "--config.eval.at_end=False"]) == 0
  _check_sample_mode(wd, capsys)
  _check_t_mid_search(wd)
  _check_edit_mode(wd, capsys, tmp_path)
  _check_eval_mode(wd, capsys, tmp_path)


@pytest.mark.long  # 40 s of compiling Inception; FID, its reference files and the port: test_fid_*.py, test_inception.py
def test_eval_mode_fid_through_the_inception_port(tmp_path, capsys):
  wd = tmp_path / "run"
  assert launch.main(SMOKE + ["--workdir", str(wd), "--config.eval.at_end=False"]) == 0
  _check_eval_mode(wd, capsys, tmp_path)
  _check_eval_fid(wd, tmp_path)


def _run(wd, mode, *extra):
  return launch.main(SMOKE + ["--workdir", str(wd), "--mode", mode, *extra])


def _one_error_line(capsys, *needles):
  out = capsys.readouterr()
  err = [ln for ln in out.err.splitlines() if ln.startswith("cmjax: error:")]
  assert len(err) == 1, out.err
  for n in needles:
    assert n in err[0], err[0]
  return err[0]


def _check_sample_mode(workdir, capsys):
  args = ["--config.sample.sigmas=(80.0,0.821)", "--config.sample.num=20"]
  assert _run(workdir, "sample", *args, "--config.sample.seed=3", "--config.sample.tag=a") == 0
  assert _run(workdir, "sample", *args, "--config.sample.seed=3", "--config.sample.tag=b") == 0
  assert _run(workdir, "sample", *args, "--config.sample.seed=4", "--config.sample.tag=c") == 0
  assert _run(workdir, "sample", *args, "--config.sample.seed=3", "--config.sample.tag=d",
              "--config.sample.params=raw", "--config.sample.checkpoint=2") == 0
  load = lambda tag: np.load(workdir / "samples" / f"sample_{tag}.npz")
  a, b, c, d = (load(t) for t in "abcd")
  assert a["images"].shape == (20, 8, 8, 1) and a["images"].dtype == np.uint8
  np.testing.assert_array_equal(a["images"], b["images"])          # deterministic given the seed
  assert (a["images"] != c["images"]).mean() > 0.1                  # another seed, other samples
  assert int(a["step"]) == 4 and int(d["step"]) == 2 and str(d["params"]) == "raw"
  assert (a["images"] != d["images"]).mean() > 0.1
  assert json.loads(str(a["spec"])) == ["cm", [80.0, 0.821]]
  assert (workdir / "samples" / "sample_a.png").exists()

  capsys.readouterr()
  assert _run(workdir, "sample", "--config.sample.sigmas=(0.5,2.0)") == 2
  _one_error_line(capsys, "must decrease")
  assert _run(workdir, "sample", "--config.sample.checkpoint=3") == 2
  _one_error_line(capsys, "no checkpoint 3", "[2, 4]")


def _check_t_mid_search(workdir):
  assert _run(workdir, "sample", "--config.sample.search_t_mid=True", "--config.sample.search_iters=1",
              "--config.sample.search_num=64", "--config.sample.num=4") == 0
  res = json.load(open(workdir / "t_mid_search.json"))
  scored = res["scored"]
  assert len(scored) == 2 and res["first"] == 80.0 and res["num_samples"] == 64
  lo, hi = np.log(0.1), np.log(10.0)  # the two interior points of the first round, in log space
  np.testing.assert_allclose([np.log(s["t_mid"]) for s in scored],
                             [lo + (hi - lo) / 3, hi - (hi - lo) / 3], rtol=1e-6)
  assert res["best_t_mid"] == min(scored, key=lambda s: s["score"])["t_mid"]


def _check_edit_mode(workdir, capsys, tmp_path):
  assert _run(workdir, "edit", "--config.edit.inputs=0:6", "--config.edit.mask=bottom") == 0
  z = np.load(workdir / "edits" / "inpaint.npz")
  orig, seen, edited = z["original"], z["observed"], z["edited"]
  assert orig.shape == seen.shape == edited.shape == (6, 8, 8, 1)
  np.testing.assert_array_equal(edited[:, :4], orig[:, :4])          # known pixels, exactly
  assert (edited[:, 4:] != orig[:, 4:]).mean() > 0.2                 # the rest was generated
  assert (workdir / "edits" / "inpaint.png").exists()
  for task in ("superres", "sdedit", "interpolate"):
    assert _run(workdir, "edit", f"--config.edit.task={task}", "--config.edit.inputs=0,1,2",
                "--config.edit.sigmas=(2.0,0.5)", "--config.edit.interp_steps=5") == 0
  assert np.load(workdir / "edits" / "interpolate.npz")["interpolations"].shape == (3, 5, 8, 8, 1)
  assert np.load(workdir / "edits" / "superres.npz")["edited"].shape == (3, 8, 8, 1)

  capsys.readouterr()
  assert _run(workdir, "edit", "--config.edit.task=colorize") == 2
  _one_error_line(capsys, "colourisation needs RGB")
  missing = str(tmp_path / "nope.png")
  assert _run(workdir, "edit", f"--config.edit.inputs={missing}") == 2
  _one_error_line(capsys, "cannot read image file", "nope.png")
  assert _run(workdir, "edit", "--config.edit.task=paint") == 2
  _one_error_line(capsys, "unknown edit.task 'paint'")
  # an image file works and is converted to the run's 8x8 grey shape
  from PIL import Image
  png = tmp_path / "digit.png"
  Image.fromarray((np.random.default_rng(0).uniform(0, 255, (32, 32, 3))).astype(np.uint8)).save(png)
  assert _run(workdir, "edit", f"--config.edit.inputs={png}") == 0
  assert np.load(workdir / "edits" / "inpaint.npz")["original"].shape == (1, 8, 8, 1)
  assert os.path.exists(workdir / "edits" / "inpaint.png")


def _check_eval_mode(workdir, capsys, tmp_path):
  """digits-FD and precision/recall per sampler, appended to eval.json."""
  assert _run(workdir, "eval") == 0
  recs = json.load(open(workdir / "eval.json"))
  assert [r["sampler"] for r in recs] == ["1step", "2step"]
  for r in recs:
    assert r["step"] == 4 and r["num_samples"] == 1024 and r["fd_digits"] > 50  # barely trained
    assert 0 <= r["digits_precision"] <= 1 and 0 <= r["digits_recall"] <= 1
    assert r["sampling_img_per_s"] > 0

  capsys.readouterr()
  assert _run(workdir, "eval", f"--config.eval.fid_weights={tmp_path / 'none.npz'}") == 2
  _one_error_line(capsys, "eval.fid_weights: no file")


def _check_eval_fid(workdir, tmp_path):
  """FID through the Inception port (random weights: the number is meaningless, the plumbing is
  not) with a cached reference, appended to eval.json."""
  import jax

  from cmjax.data.digits import load_digits_split
  from cmjax.modes.evaluate import fid_reference
  from cmjax.evaluation.inception import flatten_params, init_inception_params, make_feature_fn
  from cmjax.parallel import make_data_mesh

  params = init_inception_params(jax.random.key(0))
  weights, ref_path = str(tmp_path / "inception.npz"), str(tmp_path / "ref.npz")
  np.savez(weights, **{k: np.asarray(v) for k, v in flatten_params(params).items()})
  real = np.repeat(load_digits_split("train")[:16], 3, -1)
  ref = fid_reference(ref_path, make_feature_fn(params), lambda: [real[:10], real[10:]], 16,
                      make_data_mesh())
  assert ref["features"].shape == (16, 2048) and os.path.exists(ref_path)
  assert _run(workdir, "eval", f"--config.eval.fid_weights={weights}",
              f"--config.eval.fid_reference={ref_path}", "--config.eval.fid_num_samples=16") == 0
  recs = json.load(open(workdir / "eval.json"))
  assert len(recs) == 4  # appended
  for r in recs[2:]:
    assert r["fid_num_samples"] == 16 and np.isfinite(r["fid"]) and r["fid"] >= 0
    assert 0 <= r["precision"] <= 1 and r["inception_img_per_s"] > 0
