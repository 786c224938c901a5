"""The paper configs (configs/cifar10_*.py, configs/imagenet64_*.py) build, use only schema keys,
name their published FID, and keep the paper values that were checked against the sources.

Builds only (no validate_config: the data/model registries for cifar10/imagenet64/adm are
separate work; the one-train-step smoke test lives elsewhere).
"""
import importlib
import math

import pytest

from cmjax import config_base
from cmjax.config_validation import check_known_keys

PAPER_CONFIGS = {  # name -> (method, extra variants)
    "cifar10_edm": ("edm", ("ncsnpp", "ncsnpp,smoke")),
    "cifar10_cd": ("cd", ()),
    "cifar10_ct": ("ct", ()),
    "cifar10_ict": ("ict", ("deep",)),
    "cifar10_ect": ("ect", ("200k",)),
    "cifar10_ect_1hour": ("ect", ()),
    "cifar10_sct": ("sct", ()),
    "cifar10_meanflow": ("meanflow", ("v0", "v0,smoke")),
    "cifar10_fm": ("fm", ()),
    "imagenet64_ect": ("ect", ()),
    "imagenet64_ict": ("ict", ("deep",)),
}


def _get(name, variant=""):
  return importlib.import_module(f"configs.{name}").get_config(variant)


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_builds_with_known_keys_and_names_its_fid(name):
  method, extra = PAPER_CONFIGS[name]
  module = importlib.import_module(f"configs.{name}")
  assert "FID" in module.__doc__ and "python launch.py --config configs/" in module.__doc__
  schema = config_base.get_config()
  for variant in ("", "smoke") + extra:
    c = module.get_config(variant)
    check_known_keys(c, schema)
    assert c.method == method, (name, variant)
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("nope")


@pytest.mark.parametrize("name", sorted(PAPER_CONFIGS))
def test_smoke_shrinks_only_what_it_must(name):
  full, smoke = _get(name), _get(name, "smoke")
  assert smoke.train.batch_size == 8 and smoke.train.num_steps == 2
  assert smoke.train.duration_kimg == 0 and smoke.train.checkpoint_every == 1
  assert smoke.eval.num_samples >= 1000 and smoke.eval.batch_size % 8 == 0
  assert smoke.model.name == full.model.name and smoke.model.label_dim == full.model.label_dim
  assert smoke.model.channel_mult == (1, 2) and smoke.model.num_blocks == 1
  section = full.method
  for key, value in full[section].items():  # the method's own hyperparameters are kept
    if key == "distance" and value == "lpips":
      assert smoke[section][key] == "l2_squared"  # LPIPS weights are not available in tests
    else:
      assert smoke[section][key] == value, (name, key)
  for key in ("name", "lr", "b1", "b2"):
    assert smoke.optim[key] == full.optim[key]
  assert smoke.data.name == full.data.name and smoke.data.random_flip == full.data.random_flip


def test_edm_values():  # [code: NVlabs/edm train.py, training_loop.py]
  c = _get("cifar10_edm")
  assert (c.optim.name, c.optim.lr, c.optim.warmup_kimg) == ("adam", 1e-3, 10_000)
  assert (c.train.batch_size, c.train.duration_kimg) == (512, 200_000)
  assert (c.train.ema_halflife_kimg, c.train.ema_rampup_ratio) == (500, 0.05)
  assert c.model.dropout == 0.13 and c.model.embedding_type == "positional"
  teacher = _get("cifar10_edm", "ncsnpp")  # the CM teacher [code: cifar10_k_ve.py]
  assert teacher.model.embedding_type == "fourier" and teacher.train.num_steps == 400_000


def test_cm_values():  # [code: openai/consistency_models_cifar10 configs + launch.sh]
  cd, ct = _get("cifar10_cd"), _get("cifar10_ct")
  for c in (cd, ct):
    assert (c.optim.name, c.optim.lr, c.train.batch_size) == ("radam", 4e-4, 512)
    assert c.train.num_steps == 800_000 and c.train.ema_rate == 0.9999
    assert c.model.dropout == 0.0 and c.model.encoder_type == "residual"  # NCSN++
  assert (cd.cd.num_scales, cd.cd.mu, cd.cd.distance, cd.cd.init_from_teacher) == (18, 0.0, "lpips", True)
  assert cd.cd.teacher_workdir == "" and cd.cd.lpips_weights == ""  # the user passes them
  assert (ct.ct.s0, ct.ct.s1, ct.ct.mu0, ct.ct.total_steps) == (2, 150, 0.9, 800_000)


def test_ict_values():
  c = _get("cifar10_ict")
  assert c.train.batch_size == 1024 and c.train.num_steps == c.ict.total_steps == 400_000
  assert (c.ict.s0, c.ict.s1, c.ict.p_mean, c.ict.p_std) == (10, 1280, -1.1, 2.0)
  assert c.ict.c_per_sqrt_dim == 0.00054 and c.model.fourier_scale == 0.02
  assert _get("cifar10_ict", "deep").model.num_blocks == 8
  i = _get("imagenet64_ict")
  assert i.model.dropout_max_res == 16 and i.model.label_dim == 1000
  assert math.isclose(i.ict.c_per_sqrt_dim * math.sqrt(64 * 64 * 3), 0.0599, abs_tol=1e-4)


def test_ect_values():  # [code: locuslab/ect run_ecm*.sh, ct_train.py, imgnet branch]
  c = _get("cifar10_ect")
  assert (c.ect.q, c.ect.stage_steps, c.ect.initial_exponent, c.ect.c) == (2.0, 25_000, 1, 0.0)
  assert (c.optim.name, c.optim.lr, c.train.batch_size, c.train.ema_rate) == ("radam", 1e-4, 128, 0.9999)
  assert c.model.dropout == 0.2 and not c.data.random_flip and c.eval.t_mid == 0.821
  assert c.train.num_steps == 400_000 and _get("cifar10_ect", "200k").train.num_steps == 200_000
  h = _get("cifar10_ect_1hour")
  assert (h.ect.q, h.train.num_steps, h.train.ema_rate) == (256.0, 8_000, 0.9993)
  assert h.ect.stage_steps >= h.train.num_steps  # one stage: the curriculum never advances
  i = _get("imagenet64_ect")
  assert (i.ect.q, i.ect.c, i.ect.weighting) == (4.0, 0.06, "snr_plus")
  assert (i.ect.p_mean, i.ect.p_std) == (-0.8, 1.6)
  assert (i.model.dropout, i.model.dropout_max_res, i.eval.t_mid) == (0.4, 16, 1.526)
  assert i.train.batch_size == 128 and i.train.duration_kimg == 12_800  # 100k steps
  # ECT's EDM2-S recipe: EDM2's network and unshifted preconditioning, lr 1e-3 / sqrt(max(s/2000, 1)).
  assert (i.model.name, i.model.model_channels, i.model.label_dim) == ("edm2", 192, 1000)
  assert (i.model.channel_mult, i.model.attn_resolutions) == ((1, 2, 3, 4), (16, 8))
  assert i.param.boundary_shift is False and i.param.sigma_data == 0.5
  assert (i.optim.name, i.optim.lr, i.optim.lr_decay, i.optim.lr_decay_steps) == (
      "adam", 1e-3, "inv_sqrt", 2000)
  assert (i.optim.b1, i.optim.b2, i.optim.warmup_steps, i.train.precision) == (0.9, 0.99, 0, "fp32")


def test_imagenet64_ect_is_edm2_s():
  """The shipped network has EDM2-S's 280,209,253 U-Net parameters (NVlabs/edm2's count, see
  tests/test_edm2_unet.py; Fourier buffers not counted), by jax.eval_shape: nothing allocated."""
  import jax
  import jax.numpy as jnp

  from cmjax.models import build_model
  from cmjax.models.edm2_unet import edm2_trainable_mask
  from cmjax.schedules import lr_schedule

  model = build_model(_get("imagenet64_ect").model)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             jnp.zeros((1,)), class_labels=jnp.zeros((1,), jnp.int32)))
  mask = jax.tree.leaves(edm2_trainable_mask(shapes["params"]))
  n = sum(math.prod(a.shape) for a, m in zip(jax.tree.leaves(shapes["params"]), mask) if m)
  assert n == 280_209_253
  schedule = lr_schedule(1e-3, 0, "inv_sqrt", 100_000, 2000)  # EDM2's learning_rate_schedule
  for step, want in ((0, 1e-3), (2000, 1e-3), (8000, 1e-3 / 2), (50_000, 1e-3 / 5)):
    assert math.isclose(float(schedule(step)), want, rel_tol=1e-6), step
  with pytest.raises(ValueError, match="lr_decay_steps > 0"):
    lr_schedule(1e-3, 0, "inv_sqrt", 100_000, 0)


def test_sct_values():  # [paper sCM App. G.2]
  c = _get("cifar10_sct")
  assert (c.optim.name, c.optim.lr, c.optim.b1, c.optim.b2) == ("radam", 1e-4, 0.9, 0.99)
  assert (c.sct.p_mean, c.sct.p_std) == (-1.0, 1.4)
  assert (c.sct.tangent_norm_c, c.sct.tangent_warmup_steps) == (0.1, 10_000)
  assert c.train.batch_size == 512 and c.train.ema_halflife_kimg == 500
  assert c.model.dropout == 0.2 and c.eval.t_mid == 1.1


def test_fm_is_the_meanflow_recipe_with_the_flow_matching_loss():
  """cifar10_fm trains MeanFlow's network, augmentation, optimiser and schedule (cifar10_v1.sh)
  with the flow-matching loss and the script's t sampler."""
  fm, mf = _get("cifar10_fm"), _get("cifar10_meanflow")
  for section in ("model", "data", "optim", "train"):
    assert fm[section].to_dict() == mf[section].to_dict(), section
  assert (fm.fm.time_sampling, fm.fm.p_mean, fm.fm.p_std) == ("logit_normal", mf.meanflow.p_mean_t,
                                                              mf.meanflow.p_std_t)
  assert fm.model.augment_dim == 6 and fm.data.augment == 0.12 and fm.eval.ode_steps == 18
