"""Zero-shot editing and sampling with a REAL trained model: the EMA weights of sCD on digits
(configs/digits_scd.py, 1,100 steps from the TrigFlow teacher; digits-FD 6.0 at 1 step when
trained), shipped as float16 in tests/assets (1.7 MB) because training one takes minutes.

These would fail with a wrong operator, a missing replacement or a broken sampler: inpainted
digits must be recognised as the original digit clearly more often than digits whose missing
half is noise; super-resolved digits must be closer to the originals than bicubic upsampling in
the digits classifier's feature space (in pixel MSE bicubic's blur wins, as for any sampler);
1-step samples must score a digits-FD near the trained run's.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import editing
from cmjax.data.digits import load_digits_split
from cmjax.evaluation import digits_features, digits_fd
from cmjax.evaluation.consistency_error import model_consistency_fn
from cmjax.evaluation.digits_classifier import digits_predict
from cmjax.param_files import unflatten_params
from cmjax.models import build_model
from cmjax.parametrization import build_preconditioner, make_model_fn
from cmjax.sampling import sample_noise, trigflow_multistep_sample
from configs import digits_scd

ASSET = os.path.join(os.path.dirname(__file__), "assets", "digits_scd_ema_fp16.npz")
SIGMAS = (80.0, 10.0, 5.0, 2.0, 1.0, 0.5)  # Alg. 4's levels (EDM sigma; mapped to TrigFlow time)


@pytest.fixture(scope="module")
def trained():
  cfg = digits_scd.get_config()
  with np.load(ASSET) as z:
    params = unflatten_params({k: jnp.asarray(z[k], jnp.float32) for k in z.files})
  model_fn = make_model_fn(build_model(cfg.model), build_preconditioner("trigflow", cfg.param.sigma_data,
                                                                        cfg.param.sigma_min))
  f = model_consistency_fn(model_fn, "trigflow", False, cfg.param)
  return cfg, model_fn, f, params


@pytest.fixture(scope="module")
def heldout():
  return load_digits_split("heldout", with_labels=True)


@pytest.mark.slow
def test_shipped_model_samples_digits(trained):
  cfg, model_fn, _, params = trained
  z = sample_noise(jax.random.key(0), 2048, (8, 8, 1))
  x = jax.jit(lambda p, z: trigflow_multistep_sample(model_fn, p, z, (np.pi / 2,),
                                                     sigma_data=cfg.param.sigma_data))(params, z)
  assert digits_fd(np.asarray(x)) < 9.0  # 6.0 in float32 with the run's own noise


@pytest.mark.parametrize("mask", ["bottom", "right"])
@pytest.mark.slow
def test_inpainting_recovers_the_digit(trained, heldout, mask):
  _, _, f, params = trained
  images, labels = heldout
  m = editing.inpaint_mask(mask, 8, 8)
  op = editing.inpaint_operator(m)
  x = np.asarray(jax.jit(lambda p, y: editing.edit(f, p, y, op, SIGMAS, jax.random.key(0)))(params, images))
  keep = np.broadcast_to(m > 0, images.shape)
  np.testing.assert_array_equal(x[keep], images[keep])  # known pixels exactly
  noise = np.where(keep, images, np.clip(np.random.default_rng(0).standard_normal(images.shape), -1, 1))
  acc_edit = (digits_predict(x) == labels).mean()
  acc_noise = (digits_predict(noise) == labels).mean()
  assert acc_edit > acc_noise + 0.05, (acc_edit, acc_noise)  # measured 0.53 vs 0.43, 0.52 vs 0.37


@pytest.mark.slow
def test_superresolution_beats_bicubic_in_feature_space(trained, heldout):
  _, _, f, params = trained
  images, _ = heldout
  op = editing.superres_operator(2)
  x = np.asarray(jax.jit(lambda p, y: editing.edit(f, p, y, op, SIGMAS, jax.random.key(0)))(params, images))
  low = images.reshape(-1, 4, 2, 4, 2, 1).mean((2, 4))
  np.testing.assert_allclose(x.reshape(-1, 4, 2, 4, 2, 1).mean((2, 4)), low, atol=1e-5)  # consistent
  bicubic = np.asarray(jax.image.resize(jnp.asarray(low), images.shape, "bicubic"))
  ref = digits_features(images)
  dist = lambda a: float(np.mean(np.sum((digits_features(a) - ref) ** 2, -1)))
  assert dist(x) < 0.85 * dist(bicubic), (dist(x), dist(bicubic))  # measured 222 vs 336
