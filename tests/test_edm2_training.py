"""Training and sampling with EDM2 networks: the train step's forced weight normalisation
(`make_train_step(project=...)`, EDM2's order), CM's boundary shift switched off for ECT on EDM2
(param.boundary_shift), and an EDM2 pickle wherever a run takes weights (train.init_from,
cd.teacher_file, sample.weights) on configs/imagenet64_ect:smoke.

tests/assets/edm2_pkl_img64.pkl: made by /work/scratch/edm2_pkl_gen/gen_edm2_pkl.py with
NVlabs/edm2 at commit 4bf8162f601bcc09472ce8a32dd0cbe8889dc8fc (see tests/test_weights_edm2.py):
training.networks_edm2.Precond(img_resolution=64, img_channels=3, label_dim=1000,
model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[32], channels_per_head=8,
dropout=0.0) with random weights (not normalised) and nonzero gains, saved as EDM2's training
loop saves snapshots (float16 EMA under 'ema'). Its outputs are not frozen: the parity of the
reader with EDM2's own code is tests/test_weights_edm2.py's; here cmjax's paths are compared with
each other.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmjax.models.edm2_unet import EDM2UNet, edm2_force_normalize
from cmjax.objectives.ect import ECTObjective
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner, make_model_fn
from cmjax.train_state import init_train_state
from cmjax.train_step import make_train_step
from conftest import ROOT

PKL = os.path.join(ROOT, "tests", "assets", "edm2_pkl_img64.pkl")
MATCH = ["--config.model.model_channels=8", "--config.model.channels_per_head=8"]


def _rms_per_output(kernel):
  k = np.asarray(kernel, np.float64)
  return np.sqrt(np.mean(k.reshape(-1, k.shape[-1]) ** 2, axis=0))


def test_train_step_projects_before_the_step_as_edm2():
  """A step with project=edm2_force_normalize on params p equals a plain step on
  edm2_force_normalize(p) (loss, gradient and update at the projected weights; the EMA averages
  the updated, unprojected result), and its weights differ from a plain step's on p (whose
  kernels keep their scale: EDM2's forward normalises, so without the projection Adam's fixed-size
  steps shrink relative to growing weights)."""
  model = EDM2UNet(label_dim=0, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                   attn_resolutions=(4,), channels_per_head=8)
  model_fn = make_model_fn(model, EDMPreconditioner(0.5))
  opt = optax.adam(1e-2)
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 3),
                           ECTObjective(q=2.0, stage_steps=1))
  scale = jax.tree.map(lambda p: 3.0 * p if p.ndim >= 2 else p, state.params)  # not unit norm
  state = state.replace(params=scale, ema_params=scale)
  x = {"image": jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 0.5}
  key = jax.random.key(2)
  obj = ECTObjective(q=2.0, stage_steps=1)
  projected = jax.jit(make_train_step(model_fn, obj, opt, 0.9, project=edm2_force_normalize))
  plain = jax.jit(make_train_step(model_fn, obj, opt, 0.9))
  a, ma = projected(state, x, key)
  b, mb = plain(state.replace(params=edm2_force_normalize(state.params)), x, key)
  c, mc = plain(state, x, key)
  np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-6)
  for u, v in zip(jax.tree.leaves((a.params, a.ema_params)), jax.tree.leaves((b.params, b.ema_params))):
    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
  # The forward normalises anyway (the loss is the same), but the stored weights are not.
  np.testing.assert_allclose(ma["loss"], mc["loss"], rtol=1e-4)
  ka, kc = (s.params["enc_8x8_block0"]["conv_res0"]["kernel"] for s in (a, c))
  assert float(jnp.max(jnp.abs(ka - kc))) > 0.5
  # After the step the conv kernels are a unit-RMS kernel plus one Adam update (|u| <= ~1e-2).
  rms = _rms_per_output(a.params["enc_8x8_block0"]["conv_res0"]["kernel"])
  assert np.all(np.abs(rms - 1.0) < 2e-2) and np.all(np.abs(
      _rms_per_output(state.params["enc_8x8_block0"]["conv_res0"]["kernel"]) - 1.0) > 0.5)


def test_boundary_shift_off_is_edm_preconditioning():
  from cmjax import config_base
  from cmjax.families.edm_time import EDM_CONSISTENCY

  param = config_base.get_config().param
  assert EDM_CONSISTENCY.preconditioner(param) == ConsistencyPreconditioner(0.5, 0.002)
  param.boundary_shift = False
  pre = EDM_CONSISTENCY.preconditioner(param)
  s = jnp.asarray([0.002, 0.3, 80.0])
  for u, v in zip(pre.coefficients(s), EDMPreconditioner(0.5).coefficients(s)):
    np.testing.assert_array_equal(u, v)
  assert abs(float(pre.coefficients(s)[0][0]) - 1.0) > 1e-5  # f(x, sigma_min) != x exactly


def test_inv_sqrt_decay_needs_its_reference_steps():
  from cmjax import config_base
  from cmjax.config_validation import validate_config
  from cmjax.errors import ConfigError

  c = config_base.get_config()
  c.optim.lr_decay = "inv_sqrt"
  with pytest.raises(ConfigError, match=r"^optim.lr_decay='inv_sqrt' needs optim.lr_decay_steps > 0 "
                     r"\(EDM2's ref_batches\), got 0$"):
    validate_config(c, 8)
  c.optim.lr_decay_steps = 2000
  validate_config(c, 8)


def _config(name, *overrides):
  from cmjax.cli import _parse, _resolve_argv

  config, _, _, _ = _parse(_resolve_argv(["cmjax", "--config", name, *overrides, "--workdir", "w"]))
  return config


def _file_denoiser():
  from cmjax.weights.edm_pickle import make_model
  from cmjax.weights.files import load_network_file

  net = load_network_file(PKL)
  return net, make_model_fn(make_model(net.model_kwargs), net.precond)


@pytest.mark.slow
def test_init_from_an_edm2_file_and_one_forced_normalised_step():
  """imagenet64_ect:smoke (EDM2, ECT's recipe) starts from the file's EMA network and trains a
  step at the projected weights; a file whose width differs is one line."""
  from cmjax.errors import ConfigError
  from cmjax.run import Run, stream_key

  net, _ = _file_denoiser()
  run = Run(_config("imagenet64_ect:smoke", *MATCH, f"--config.train.init_from={PKL}"))
  state = run.init_state()
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(net.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  k0 = net.params["enc_64x64_block0"]["conv_res0"]["kernel"]
  assert np.all(np.abs(_rms_per_output(k0) - 1.0) > 0.05)  # the file's weights: not unit RMS
  batch = run.device_batch({"image": np.zeros((8, 64, 64, 3), np.float32),
                            "label": np.arange(8, dtype=np.int32)})
  state, metrics = run.train_step(state, batch, stream_key(0, "train"))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["lr"]) == pytest.approx(1e-3)
  rms = _rms_per_output(state.params["enc_64x64_block0"]["conv_res0"]["kernel"])
  assert np.all(np.abs(rms - 1.0) < 0.02)  # projected, then one Adam step of ~1e-3
  with pytest.raises(ConfigError, match="^train.init_from: the file's network has "
                     "model.model_channels=8 but the config has 16$"):
    Run(_config("imagenet64_ect:smoke", f"--config.train.init_from={PKL}"))


@pytest.mark.slow
def test_edm2_file_as_cd_teacher_and_in_sample_mode(tmp_path, capsys):
  import launch
  from cmjax.images import to_uint8
  from cmjax.modes.common import inference_setup
  from cmjax.run import Run

  net, fn = _file_denoiser()
  cd = ["--config.method=cd", f"--config.cd.teacher_file={PKL}", "--config.cd.init_from_teacher=False",
        "--config.cd.distance=l2_squared"]
  run = Run(_config("imagenet64_ect:smoke", *cd))
  assert run.teacher.source["precond"] == "Precond"
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  s, labels = jnp.asarray([0.5, 5.0]), jnp.asarray([3, 999])
  np.testing.assert_allclose(run.teacher.fn(run.teacher.params, x, s, labels),
                             fn(net.params, x, s, labels=labels), rtol=1e-5, atol=1e-6)
  args = ["imagenet64_ect:smoke", *MATCH, "--config.method=edm", f"--config.sample.weights={PKL}",
          "--config.sample.num=2", "--config.sample.ode_steps=2", "--config.sample.class_label=7"]
  rc = launch.main(["launch.py", "--config", args[0], *args[1:], "--workdir", str(tmp_path),
                    "--mode", "sample"])
  assert rc == 0, capsys.readouterr().err[-2000:]
  out = np.load(tmp_path / "samples" / "sample_imported_ode.npz")
  built, sampler, step, params = inference_setup(_config(*args), str(tmp_path), weights=PKL)
  assert step == -1 and built.family.name == "edm_diffusion"
  want = sampler.generate(params, 2, ("edm", 2, "heun"), class_label=7)
  np.testing.assert_array_equal(out["images"], to_uint8(want))
