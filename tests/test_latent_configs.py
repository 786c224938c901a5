"""The latent ImageNet-256 paper configs (configs/imagenet256_*.py), as tests/test_paper_configs*.py
cover the pixel ones: they build with schema keys, name their FID and launch line, keep the values
checked against the authors' code, validate once the user's paths exist (one line before that),
and their ':smoke' variants (a 1-block DiT) run one real train step on mock latents."""
import importlib

import jax
import numpy as np
import pytest

from _latent_data import mock_latents, tiny_vae_file
from cmjax import config_base
from cmjax.config_validation import ConfigError, check_known_keys, validate_config

LATENT_CONFIGS = {"imagenet256_meanflow_b2": ("meanflow", "B"),
                  "imagenet256_meanflow_l2": ("meanflow", "L"),
                  "imagenet256_meanflow_xl2": ("meanflow", "XL"),
                  "imagenet256_shortcut_b2": ("shortcut", "B")}


def _get(name, variant=""):
  return importlib.import_module(f"configs.{name}").get_config(variant)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("in256")
  mock_latents(str(tmp / "lat"), 256, resolution=256, classes=1000, shard=64)  # one full batch
  return {"path": str(tmp / "lat"), "vae_weights": tiny_vae_file(str(tmp / "vae.npz"))}


@pytest.mark.parametrize("name", sorted(LATENT_CONFIGS))
def test_builds_with_known_keys_and_names_its_fid(name):
  method, size = LATENT_CONFIGS[name]
  module = importlib.import_module(f"configs.{name}")
  assert "FID" in module.__doc__ and "python launch.py --config configs/" in module.__doc__
  schema = config_base.get_config()
  for variant in ("", "smoke"):
    c = module.get_config(variant)
    check_known_keys(c, schema)
    assert c.method == method and c.data.name == "latent" and c.data.resolution == 256
  with pytest.raises(ValueError, match="unknown variant"):
    module.get_config("nope")
  from cmjax.models.dit import DIT_SIZES
  m = _get(name).model
  assert (m.hidden_size, m.depth, m.num_heads) == DIT_SIZES[size] and m.patch_size == 2
  assert (m.input_size, m.in_channels, m.label_dim, m.time_conditions) == (32, 4, 1000, 2)


@pytest.mark.parametrize("name", sorted(LATENT_CONFIGS))
def test_smoke_shrinks_only_the_network(name):
  full, smoke = _get(name).to_dict(), _get(name, "smoke").to_dict()
  assert (smoke["model"]["hidden_size"], smoke["model"]["depth"]) == (32, 1)
  assert smoke["train"]["batch_size"] == 8 and smoke["train"]["num_steps"] == 2
  for section in ("data", "optim", full["method"], "encode"):
    assert smoke[section] == full[section], section
  for key in ("label_dim", "class_dropout_prob", "null_class", "time_conditions", "input_size"):
    assert smoke["model"][key] == full["model"][key], key


def test_meanflow_values():  # [code: Gsunshine/meanflow configs/default.py, meanflow.py, train.py]
  for name in ("imagenet256_meanflow_b2", "imagenet256_meanflow_l2", "imagenet256_meanflow_xl2"):
    c = _get(name)
    mf = c.meanflow
    assert (mf.tr_sampler, mf.p_mean_t, mf.p_std_t, mf.p_mean_r, mf.p_std_r) == ("v0", -0.4, 1.0, -0.4, 1.0)
    assert (mf.ratio_r_neq_t, mf.norm_p, mf.norm_eps) == (0.25, 1.0, 0.01)
    assert (mf.cfg_omega, mf.cfg_kappa, mf.class_dropout_prob, mf.num_classes) == (1.0, 0.5, 0.1, 1000)
    assert (c.optim.name, c.optim.lr, c.optim.b2, c.optim.weight_decay) == ("adam", 1e-4, 0.95, 0.0)
    assert (c.train.batch_size, c.train.ema_rate, c.train.num_steps) == (256, 0.9999, 240 * 5004)
    assert c.model.class_dropout_prob == 0.0 and c.model.null_class and not c.data.random_flip


def test_shortcut_values():  # [code: kvfrans/shortcut-models README, train.py]
  c = _get("imagenet256_shortcut_b2")
  s = c.shortcut
  assert (s.denoise_timesteps, s.bootstrap_every, s.bootstrap_ema, s.target_decay) == (128, 8, True, 0.999)
  assert (c.optim.lr, c.optim.b2, c.optim.weight_decay) == (1e-4, 0.999, 0.1)
  assert (c.train.batch_size, c.train.num_steps) == (256, 810_000)
  assert c.model.class_dropout_prob == 0.1 and c.data.random_flip and c.eval.params == "raw"


@pytest.mark.parametrize("name", sorted(LATENT_CONFIGS))
def test_full_config_validates_once_its_paths_exist(name, paths):
  c = _get(name)
  with pytest.raises(ConfigError, match="data.path '' is not a directory"):
    validate_config(c, 8)
  c.data.path = paths["path"]
  with pytest.raises(ConfigError, match="needs data.vae_weights"):
    validate_config(c, 8)
  c.data.vae_weights = paths["vae_weights"]
  validate_config(c, 8)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["imagenet256_meanflow_xl2", "imagenet256_shortcut_b2"])
def test_smoke_variant_trains_one_step_on_mock_latents(name, paths):
  """The three MeanFlow smokes are the same 1-block network; one of them runs."""
  from cmjax.run import Run, stream_key
  c = _get(name, "smoke")
  c.data.update(**paths)
  c.train.compile_cache = ""
  run = Run(c)
  source = run.source()
  assert source.with_labels and run.image_shape == (32, 32, 4)
  step_fn, _, memory = run.compile_train_step()
  batch = run.device_batch(source.batch(0))
  assert batch["image"].shape == (8, 32, 32, 4) and batch["label"].shape == (8,)
  state, metrics = step_fn(run.init_state(), batch, stream_key(c.seed, "train"))
  metrics = jax.device_get(metrics)
  assert int(state.step) == 1
  for key in ("loss", "grad_norm", "update_norm", "param_norm"):
    assert np.isfinite(metrics[key]) and metrics[key] > 0, (name, key, metrics[key])
  assert memory == {} or memory["total"] > 0
