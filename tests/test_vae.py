"""The SD VAE (cmjax.models.vae.AutoencoderKL) and its diffusers converter
(cmjax.weights.vae_diffusers, scripts/convert_sd_vae.py): parity with diffusers' AutoencoderKL on
random weights, the SD parameter count, the converter's refusals, the safetensors reader, the
posterior (clipping, sampling) and the scaled-latent helpers.

Frozen assets (tests/assets), made by /work/scratch/vae_ref/make_vae_assets.py with
diffusers 0.42.1 (PyPI wheel = github.com/huggingface/diffusers tag v0.42.1), torch 2.13.0+cpu,
safetensors 0.8.0:

  /work/scratch/torchenv/bin/python make_vae_assets.py /work/main/tests/assets

- vae_tiny_diffusers/{config.json, diffusion_pytorch_model.safetensors} (231 KB, float32): a tiny
  diffusers AutoencoderKL (block_out_channels (8, 8, 8, 16), 4 DownEncoderBlock2D /
  UpDecoderBlock2D, layers_per_block 1, norm_num_groups 4, latent_channels 4: f8 like SD, channel
  changes, mid attention, quant convs; 53,247 parameters) written by save_pretrained(
  safe_serialization=True), after torch.manual_seed(0) init and then every parameter redrawn from
  torch.Generator seed 1: weights N(0, 1/fan_in), GroupNorm weights 1 + 0.2 N(0, 1), biases
  0.2 N(0, 1) (no zero-init or identity layer is left).
- vae_tiny_fp16.bin (162 KB): the same state dict cast to float16, written by torch.save (zip
  format, as diffusers' save_pretrained(safe_serialization=False)).
- vae_tiny_reference.npz (55 KB): x (2, 32, 32, 3) NHWC ~ U(-1, 1); mean, logvar, std (2, 4, 4, 4) of
  encode(x).latent_dist; z (2, 4, 4, 4) ~ N(0, 1); decoded = decode(z).sample (2, 32, 32, 3); all
  NHWC, computed with the diffusers model in float64, stored float32. dt_* are the values of
  vae_dtypes.safetensors (0.7 KB; one tensor per dtype written by safetensors.torch.save_file).
"""
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import load_script
from cmjax.models import vae as V
from cmjax.param_files import flatten_params
from cmjax.weights import vae_diffusers as D
from cmjax.weights.safe_pickle import WeightsFileError

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
TINY_DIR = os.path.join(ASSETS, "vae_tiny_diffusers")
TINY_WEIGHTS = os.path.join(TINY_DIR, "diffusion_pytorch_model.safetensors")
# sum(p.numel()) of diffusers.AutoencoderKL with the SD config (4 x DownEncoderBlock2D /
# UpDecoderBlock2D, block_out_channels (128, 256, 512, 512), layers_per_block 2), measured with
# diffusers 0.42.1; the parameter count of stabilityai/sd-vae-ft-ema and sd-vae-ft-mse.
SD_VAE_PARAMS = 83_653_863


@pytest.fixture(scope="module")
def tiny():
  return D.load_diffusers_vae(TINY_DIR)


@pytest.fixture(scope="module")
def ref():
  with np.load(os.path.join(ASSETS, "vae_tiny_reference.npz")) as z:
    return {k: z[k] for k in z.files}


def _rel(a, b):
  return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def test_tiny_config_read_from_diffusers_json(tiny):
  vae, _ = tiny
  assert (tuple(vae.block_out_channels), vae.layers_per_block, vae.norm_num_groups,
          vae.latent_channels, vae.scaling_factor, vae.shift_factor, vae.downsampling_factor) == (
              (8, 8, 8, 16), 1, 4, 4, 0.18215, None, 8)


@pytest.mark.slow
def test_encode_decode_match_diffusers(tiny, ref):
  vae, params = tiny
  post = vae.apply({"params": params}, ref["x"], method=V.AutoencoderKL.encode)
  assert post.mean.shape == (2, 4, 4, 4) and post.mean.dtype == jnp.float32
  for k in ("mean", "logvar", "std"):
    assert _rel(getattr(post, k), ref[k]) <= 1e-4, k
  out = vae.apply({"params": params}, ref["z"], method=V.AutoencoderKL.decode)
  assert out.shape == (2, 32, 32, 3)
  assert _rel(out, ref["decoded"]) <= 1e-4
  # the scaled-latent helpers: encode -> mean * 0.18215, decode(z * 0.18215) = decoder(z)
  np.testing.assert_allclose(V.encode(params, ref["x"], vae=vae), ref["mean"] * 0.18215,
                             rtol=1e-4, atol=1e-4 * 0.18215 * np.abs(ref["mean"]).max())
  assert _rel(V.decode(params, ref["z"] * 0.18215, vae=vae), ref["decoded"]) <= 1e-4
  # shift_factor: latents (z - shift) * scale, decoded as z / scale + shift
  shifted = vae.clone(shift_factor=0.5)
  np.testing.assert_allclose(V.encode(params, ref["x"], vae=shifted),
                             (ref["mean"] - 0.5) * 0.18215, atol=1e-5)
  assert _rel(V.decode(params, (ref["z"] - 0.5) * 0.18215, vae=shifted), ref["decoded"]) <= 1e-4


def test_sd_config_parameter_count_matches_diffusers():
  vae = V.sd_vae()
  shapes = D.expected_shapes(vae)  # jax.eval_shape: nothing allocated
  assert sum(int(np.prod(s)) for s in shapes.values()) == SD_VAE_PARAMS
  assert vae.downsampling_factor == 8 and vae.scaling_factor == 0.18215 and vae.shift_factor is None
  # the layout the converter relies on, spot-checked against diffusers' names and shapes
  assert shapes["encoder/down_blocks_0/downsamplers_0/conv/kernel"] == (3, 3, 128, 128)
  assert shapes["encoder/down_blocks_1/resnets_0/conv_shortcut/kernel"] == (1, 1, 128, 256)
  assert shapes["encoder/mid_block/attentions_0/to_q/kernel"] == (512, 512)
  assert shapes["encoder/conv_out/kernel"] == (3, 3, 512, 8)
  assert shapes["quant_conv/kernel"] == (1, 1, 8, 8)
  assert shapes["decoder/up_blocks_3/resnets_2/conv2/kernel"] == (3, 3, 128, 128)
  assert "decoder/up_blocks_3/upsamplers_0/conv/kernel" not in shapes
  assert "encoder/down_blocks_3/downsamplers_0/conv/kernel" not in shapes
  with pytest.raises(ValueError, match="unknown AutoencoderKL fields"):
    V.sd_vae(channels=64)


def test_converter_refuses_files_that_do_not_fit(tiny):
  vae, params = tiny
  state = D.read_safetensors(TINY_WEIGHTS)
  bad = dict(state)
  bad["encoder.down_blocks.3.resnets.0.conv1.weight"] = np.zeros((16, 8, 3, 1), np.float32)
  with pytest.raises(WeightsFileError) as e:
    D.convert_state_dict(bad, vae)
  msg = str(e.value)
  assert "\n" not in msg
  assert ("'encoder.down_blocks.3.resnets.0.conv1.weight' has shape (16, 8, 3, 1), expected "
          "(16, 8, 3, 3)") in msg
  missing = {k: v for k, v in state.items() if k != "decoder.up_blocks.1.resnets.0.conv_shortcut.bias"}
  with pytest.raises(WeightsFileError, match=r"missing tensor 'decoder\.up_blocks\.1\.resnets\.0\."
                     r"conv_shortcut\.bias' with shape \(8,\)"):
    D.convert_state_dict(missing, vae)
  with pytest.raises(WeightsFileError, match=r"unknown tensor 'encoder\.conv_in\.running_mean'"):
    D.convert_state_dict({**state, "encoder.conv_in.running_mean": np.zeros(8)}, vae)
  with pytest.raises(WeightsFileError, match=r"unknown tensor 'encoder\.down_blocks\.4\."):
    D.convert_state_dict({**state, "encoder.down_blocks.4.resnets.0.norm1.weight": np.zeros(16)}, vae)
  # the real file against the SD config: the first tensor that differs is named
  with pytest.raises(WeightsFileError, match=r"tensor 'decoder\.conv_in\.weight' has shape "
                     r"\(16, 4, 3, 3\), expected \(512, 4, 3, 3\) for AutoencoderKL\(block_out_"
                     r"channels=\(128, 256, 512, 512\)"):
    D.convert_state_dict(state, V.sd_vae())
  # older diffusers files name the attention query/key/value/proj_attn: same parameters
  old = {}
  for k, v in state.items():
    for new, dep in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
      k = k.replace(f"attentions.0.{new}.", f"attentions.0.{dep}.")
    old[k] = v
  assert "encoder.mid_block.attentions.0.proj_attn.weight" in old
  converted = D.convert_state_dict(old, vae)
  jax.tree.map(np.testing.assert_array_equal, converted, params)
  with pytest.raises(WeightsFileError, match="expected floating point"):
    D.convert_state_dict({**state, "quant_conv.bias": np.arange(8)}, vae)


def test_cli_writes_npz_and_refuses_mismatched_config(tiny, tmp_path, ref):
  vae, params = tiny
  script = load_script("convert_sd_vae")
  out = str(tmp_path / "tiny.npz")
  script.main([TINY_DIR, "--out", out])
  with np.load(out, allow_pickle=False) as z:
    assert all(z[k].dtype == np.float32 for k in z.files)
    assert set(z.files) == set(flatten_params(params))
  vae2, params2 = D.load_vae_npz(out)  # config from tiny.json
  assert vae2 == vae
  jax.tree.map(np.testing.assert_array_equal, params2, params)
  # a config the file does not fit: nothing written, one line naming the tensor
  bad_dir = tmp_path / "bad"
  shutil.copytree(TINY_DIR, bad_dir)
  cfg = json.loads((bad_dir / "config.json").read_text())
  (bad_dir / "config.json").write_text(json.dumps({**cfg, "layers_per_block": 2}))
  with pytest.raises(SystemExit, match=r"missing tensor 'decoder\.up_blocks\.0\.resnets\.2\.conv1\.weight'"):
    script.main([str(bad_dir), "--out", str(tmp_path / "bad.npz")])
  assert not (tmp_path / "bad.npz").exists()
  # a weights file without config.json needs --config / --sd-config
  lone = tmp_path / "lone.safetensors"
  shutil.copy(TINY_WEIGHTS, lone)
  with pytest.raises(SystemExit, match="no config.json beside it"):
    script.main([str(lone), "--out", str(tmp_path / "x.npz")])
  with pytest.raises(SystemExit, match=r"expected \(512, 4, 3, 3\)"):
    script.main([str(lone), "--sd-config", "--out", str(tmp_path / "x.npz")])
  script.main([str(lone), "--config", os.path.join(TINY_DIR, "config.json"),
               "--out", str(tmp_path / "y.npz")])
  _, params3 = D.load_vae_npz(str(tmp_path / "y.npz"))
  jax.tree.map(np.testing.assert_array_equal, params3, params)
  # a torch.save .bin (float16 copy of the same weights): read without torch, converted to float32
  bin_out = str(tmp_path / "from_bin.npz")
  script.main([os.path.join(ASSETS, "vae_tiny_fp16.bin"), "--config",
               os.path.join(TINY_DIR, "config.json"), "--out", bin_out])
  _, params_bin = D.load_vae_npz(bin_out)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b).astype(np.float16)
                                                           .astype(np.float32)), params_bin, params)
  # a .npz whose shapes do not fit the model it is loaded into
  with pytest.raises(ValueError, match="has shape"):
    D.load_vae_npz(out, vae=vae.clone(latent_channels=8))
  with pytest.raises(WeightsFileError, match="unknown AutoencoderKL config fields"):
    D.vae_from_config({**cfg, "use_tiling": True})
  with pytest.raises(WeightsFileError, match="up_block_types"):
    D.vae_from_config({**cfg, "up_block_types": ["UpDecoderBlock2D"] * 3 + ["AttnUpDecoderBlock2D"]})


def test_safetensors_reader_dtypes_and_corrupt_files(ref, tmp_path):
  arrays = D.read_safetensors(os.path.join(ASSETS, "vae_dtypes.safetensors"))
  expected_dtype = dict(f16="float16", bf16="bfloat16", f32="float32", f64="float64", i32="int32",
                        i64="int64", u8="uint8", bool="bool", scalar="float32")
  assert set(arrays) == set(expected_dtype)
  for k, dt in expected_dtype.items():
    a = arrays[k]
    assert str(a.dtype) == dt, k
    assert a.shape == ref["dt_" + k].shape, k
    np.testing.assert_array_equal(a.astype(np.float64), ref["dt_" + k].astype(np.float64), err_msg=k)
  raw = open(TINY_WEIGHTS, "rb").read()
  n = int.from_bytes(raw[:8], "little")
  cases = {
      "short": raw[:5],
      "huge_header": (10**12).to_bytes(8, "little") + raw[8:],
      "not_json": raw[:8] + b"x" * n + raw[8 + n:],
      "truncated": raw[:-4],
  }
  header = json.loads(raw[8:8 + n])
  name = next(k for k in header if k != "__metadata__")
  header[name]["dtype"] = "F8_E4M3"
  h = json.dumps(header).encode()
  cases["dtype"] = len(h).to_bytes(8, "little") + h + raw[8 + n:]
  for case, data in cases.items():
    p = tmp_path / f"{case}.safetensors"
    p.write_bytes(data)
    with pytest.raises(WeightsFileError) as e:
      D.read_safetensors(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value), case


def test_posterior_logvar_clipped_as_diffusers(tiny, ref):
  vae, params = tiny
  for shift, clipped in ((100.0, 20.0), (-100.0, -30.0)):
    p = jax.tree.map(lambda a: a, params)
    p["quant_conv"]["bias"] = params["quant_conv"]["bias"].at[4:].add(shift)  # the logvar half
    post = vae.apply({"params": p}, ref["x"], method=V.AutoencoderKL.encode)
    np.testing.assert_array_equal(post.logvar, clipped)
    np.testing.assert_allclose(post.std, np.exp(clipped / 2), rtol=1e-6)
    assert _rel(post.mean, ref["mean"]) <= 1e-4


def test_sampling_is_deterministic_per_key(tiny, ref):
  vae, params = tiny
  x = ref["x"][:1]
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a, b = V.encode(params, x, k1, sample=True, vae=vae), V.encode(params, x, k1, sample=True, vae=vae)
  np.testing.assert_array_equal(a, b)
  c = V.encode(params, x, k2, sample=True, vae=vae)
  assert np.min(np.abs(np.asarray(a) - np.asarray(c))) > 0
  # the reparameterisation: (mean + std * eps) * scale, eps = normal(key)
  eps = jax.random.normal(k1, (1, 4, 4, 4))
  np.testing.assert_allclose(a, (ref["mean"][:1] + ref["std"][:1] * eps) * 0.18215, atol=2e-5)
  # the mode does not depend on a key
  np.testing.assert_array_equal(V.encode(params, x, vae=vae), V.encode(params, x, k2, vae=vae))
  with pytest.raises(ValueError, match="needs a PRNG key"):
    V.encode(params, x, sample=True, vae=vae)


def test_256_round_trip_shapes_and_input_errors(tiny):
  vae, params = tiny
  x = jax.random.uniform(jax.random.key(0), (1, 256, 256, 3), minval=-1, maxval=1)
  z = V.encode(params, x, vae=vae)
  assert z.shape == (1, 32, 32, 4)
  y = V.decode(params, z, vae=vae)
  assert y.shape == (1, 256, 256, 3) and y.dtype == jnp.float32
  assert np.all(np.isfinite(np.asarray(y)))
  with pytest.raises(V.VAEInputError, match=r"expected \(B, H, W, 3\)"):
    V.encode(params, x[..., :1], vae=vae)
  with pytest.raises(V.VAEInputError, match="multiples of 8"):
    V.encode(params, x[:, :252, :252], vae=vae)
  with pytest.raises(V.VAEInputError, match=r"expected \(B, H, W, 4\)"):
    V.decode(params, z[..., :3], vae=vae)


def test_bfloat16_computation_close_to_float32(tiny, ref):
  vae, params = tiny
  vae16 = vae.clone(dtype=jnp.bfloat16)
  post = vae16.apply({"params": params}, ref["x"], method=V.AutoencoderKL.encode)
  assert post.mean.dtype == jnp.float32  # posterior moments are returned in float32
  assert 1e-4 < _rel(post.mean, ref["mean"]) < 5e-2
  out = vae16.apply({"params": params}, ref["z"], method=V.AutoencoderKL.decode)
  assert out.dtype == jnp.bfloat16
  assert _rel(out, ref["decoded"]) < 5e-2
