"""Published network files wherever a run takes weights: `train.init_from` starts ECT from EDM's
network (cifar10_ect_1hour:smoke on mock CIFAR-10, through launch.py), `cd.teacher_file` distils
from a file with its own preconditioning, and `--mode sample` samples the imported EDM model with
Heun — equal to EDM's own generate.py sampler on the same latents.

tests/assets/edm_cifar_smoke_vp.pkl / .npz were made with NVlabs/edm at commit
008a4e5316c8e3bfe61a62f874bddba254295afb, torch 2.13.0+cpu: EDMPrecond(img_resolution=32,
img_channels=3, SongUNet DDPM++: model_channels=8, channel_mult [1, 2], num_blocks 1,
attn_resolutions [16], dropout 0.13) with random weights rounded to float16, pickled as EDM's
training loop does (pickle.dump(dict(ema=net, loss_fn=EDMLoss(), ...))), and generate.py's
edm_sampler(net, latents, num_steps=6) (Heun, S_churn=0) on the stored latents.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import launch
from conftest import ROOT

PKL = os.path.join(ROOT, "tests", "assets", "edm_cifar_smoke_vp.pkl")
REF = os.path.join(ROOT, "tests", "assets", "edm_cifar_smoke_vp.npz")
# The file's width and no augmentation labels (the file is an EDM network trained without
# --augment); the smoke net is otherwise equal.
MATCH = ["--config.model.model_channels=8", "--config.model.augment_dim=0", "--config.data.augment=0.0"]
tfds = pytest.importorskip("tensorflow_datasets")


@pytest.mark.slow
def test_imported_model_samples_like_edm_generate():
  """EDM's Heun sampler (generate.py) on the imported network, same latents: 1e-4 relative."""
  from cmjax.parametrization import make_model_fn
  from cmjax.sampling import edm_sample, edm_sigmas
  from cmjax.weights.edm_pickle import make_model
  from cmjax.weights.files import load_network_file

  net = load_network_file(PKL)
  assert net.model_kwargs["name"] == "song_unet" and net.read.precond_class == "EDMPrecond"
  ref = np.load(REF)
  fn = make_model_fn(make_model(net.model_kwargs), net.precond)
  x = edm_sample(fn, net.params, jnp.asarray(ref["latents"]), edm_sigmas(int(ref["num_steps"])))
  err = float(jnp.max(jnp.abs(x - ref["samples"])) / np.max(np.abs(ref["samples"])))
  assert err < 1e-4, err


def _config(name, *overrides):
  from cmjax.cli import _parse, _resolve_argv

  config, _, _, _ = _parse(_resolve_argv(["cmjax", "--config", name, *overrides, "--workdir", "w"]))
  return config


@pytest.mark.slow
def test_init_from_starts_the_run_from_the_file_and_trains(tmp_path, capsys):
  from cmjax.run import Run
  from cmjax.weights.files import load_network_file

  args = ["cifar10_ect_1hour:smoke", *MATCH, f"--config.train.init_from={PKL}"]
  run = Run(_config(*args))
  start = run.init_state()
  want = load_network_file(PKL).params
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with tfds.testing.mock_data(num_examples=16):
    rc = launch.main(["launch.py", "--config", args[0], *args[1:], "--workdir", str(tmp_path),
                      "--config.eval.at_end=False"])
  assert rc == 0, capsys.readouterr().err[-2000:]
  assert (tmp_path / "summary.json").exists()


def test_a_file_that_does_not_fit_is_one_line(tmp_path, capsys):
  rc = launch.main(["launch.py", "--config", "cifar10_ect_1hour:smoke", f"--config.train.init_from={PKL}",
                    "--workdir", str(tmp_path)])
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
  assert rc == 2 and len(err) == 1
  assert err[0] == ("cmjax: error: train.init_from: the file's network has model.model_channels=8 "
                    "but the config has 16")
  assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
def test_teacher_from_a_file_with_its_own_preconditioning():
  """cd.teacher_file: the teacher is the file's EDMPrecond denoiser, stored in the train state."""
  from cmjax.run import Run
  from cmjax.weights.files import load_network_file

  c = _config("cifar10_cd:smoke", f"--config.cd.teacher_file={PKL}", "--config.cd.init_from_teacher=False")
  run = Run(c)
  assert run.teacher.source["file"] == PKL and run.teacher.source["precond"] == "EDMPrecond"
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  s = jnp.asarray([0.5, 5.0])
  net = load_network_file(PKL)
  from cmjax.parametrization import make_model_fn
  from cmjax.weights.edm_pickle import make_model
  want = make_model_fn(make_model(net.model_kwargs), net.precond)(net.params, x, s)
  np.testing.assert_allclose(run.teacher.fn(run.teacher.params, x, s), want, rtol=1e-5, atol=1e-6)
  # The state holds the file's teacher. A CD step with a teacher is the same step whatever the
  # teacher's origin (test_paper_configs.py's cifar10_cd smoke runs one); not compiled again here.
  state = jax.eval_shape(run.init_state)
  assert jax.tree.map(lambda a: a.shape, state.teacher_params) == jax.tree.map(
      lambda a: a.shape, run.teacher.params)


@pytest.mark.slow
def test_sample_mode_on_an_imported_model(tmp_path, capsys):
  """--mode sample with sample.weights: EDM's Heun on the file's network, no checkpoint needed."""
  from cmjax.images import to_uint8
  from cmjax.modes.common import inference_setup

  args = ["cifar10_edm:smoke", *MATCH, f"--config.sample.weights={PKL}", "--config.sample.num=4",
          "--config.sample.ode_steps=6"]
  rc = launch.main(["launch.py", "--config", args[0], *args[1:], "--workdir", str(tmp_path), "--mode", "sample"])
  assert rc == 0, capsys.readouterr().err[-2000:]
  out = np.load(tmp_path / "samples" / "sample_imported_ode.npz")
  built, sampler, step, params = inference_setup(_config(*args), str(tmp_path), weights=PKL)
  assert step == -1 and built.family.name == "edm_diffusion"
  want = to_uint8(sampler.generate(params, 4, ("edm", 6, "heun")))
  np.testing.assert_array_equal(out["images"], want)
  # a consistency method cannot sample a denoiser file: one line
  rc = launch.main(["launch.py", "--config", "cifar10_ect:smoke", *MATCH, f"--config.sample.weights={PKL}",
                    "--workdir", str(tmp_path), "--mode", "sample"])
  err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("cmjax:")]
  assert rc == 2 and len(err) == 1 and "holds an EDM-time denoiser" in err[0], err
