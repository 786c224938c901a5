"""cmjax.evaluation.inception: parity with pytorch-fid's FID Inception-v3, weight loading, input helpers.

The parity tests need torch + torchvision + pytorch-fid and are skipped without them (the importorskip
lives in their fixture, so the tests below it still run where torch is absent). They use seeded random
weights (nothing downloaded) whose BatchNorm scale/bias/running mean/var are all non-trivial (see
scripts/convert_inception_weights.py::_randomize), converted through the .npz path.
Tolerance: max|ours - torch| <= 1e-4 * max|torch| over the (B, 2048) pool3 features.
"""
from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.evaluation import inception as I
from cmjax.param_files import unflatten_params
from _helpers import load_script

RTOL = 1e-4


def _converter():
  return load_script("convert_inception_weights")


@pytest.fixture(scope="module")
def torch_and_params(tmp_path_factory):
  """(pytorch-fid InceptionV3([3]) with random weights, our params loaded from the converted .npz)."""
  pytest.importorskip("torch")
  if importlib.util.find_spec("pytorch_fid") is None or importlib.util.find_spec("torchvision") is None:
    pytest.skip("pytorch-fid / torchvision not installed")
  conv = _converter()
  model = conv.build_torch_model(random=True, seed=0)
  path = str(tmp_path_factory.mktemp("inception") / "inception_rand.npz")
  conv.save(conv.convert_state_dict(model), path)
  return model, I.load_inception_params(path)


def _torch_features(model, x_nchw01: np.ndarray) -> np.ndarray:
  import torch
  with torch.no_grad():
    out = model(torch.from_numpy(x_nchw01))
  assert len(out) == 1
  return out[0].numpy().reshape(x_nchw01.shape[0], -1)


def _report(name: str, ours: np.ndarray, ref: np.ndarray) -> float:
  err = float(np.abs(ours - ref).max() / np.abs(ref).max())
  print(f"{name}: max|torch| {np.abs(ref).max():.4g}, max|diff| / max|torch| = {err:.3g}")
  return err


def test_parity_299_float(torch_and_params):
  model, params = torch_and_params
  x = np.random.default_rng(0).uniform(0, 1, (2, 3, 299, 299)).astype(np.float32)
  ref = _torch_features(model, x)
  ours = np.asarray(I.make_feature_fn(params)(jnp.asarray(x.transpose(0, 2, 3, 1) * 2 - 1)))
  assert ours.shape == ref.shape == (2, 2048) and ours.dtype == np.float32
  assert np.abs(ref).max() > 0 and np.mean(ref > 0) > 0.5  # the random net is not degenerate
  assert _report("299x299 float", ours, ref) <= RTOL


def test_parity_32_uint8_resized(torch_and_params):
  """32x32 uint8 images: pytorch-fid's ToTensor (/255) + bilinear upsampling vs features_from_uint8."""
  model, params = torch_and_params
  u8 = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  ref = _torch_features(model, (u8.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32))
  ours = np.asarray(I.features_from_uint8(I.make_feature_fn(params), u8))
  assert ours.shape == (2, 2048)
  assert _report("32x32 uint8 (resized)", ours, ref) <= RTOL


def test_converter_real_state_dict_layout(torch_and_params):
  """The raw torchvision-named state dict (the pt_inception .pth layout) converts like the wrapper."""
  model, params = torch_and_params
  conv = _converter()
  state = conv._named_state(model)
  assert "Mixed_7c.branch_pool.conv.weight" in state and "Conv2d_1a_3x3.bn.running_var" in state
  from_raw = conv.convert_state_dict({**state, "fc.weight": np.zeros((1008, 2048))})
  flat = I.flatten_params(params)
  assert set(from_raw) == set(flat)
  for k in ("Conv2d_1a_3x3/conv/kernel", "Mixed_6e/branch7x7dbl_5/conv/kernel", "Mixed_7c/branch_pool/bn/mean"):
    np.testing.assert_array_equal(from_raw[k], np.asarray(flat[k]))


# ---------------------------------------------------------------- without torch


@pytest.fixture(scope="module")
def random_params():
  """He-scaled random conv kernels and random, non-identity BatchNorms, built from the expected shapes."""
  rng = np.random.default_rng(0)
  flat = {}
  for k, s in I.param_shapes().items():
    if k.endswith("kernel"):
      flat[k] = rng.normal(size=s) * np.sqrt(2 / np.prod(s[:-1]))
    elif k.endswith(("scale", "var")):
      flat[k] = rng.uniform(0.7, 1.3, s)
    else:
      flat[k] = 0.05 * rng.normal(size=s)
  return unflatten_params({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


def _save_flat(path, flat):
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
  return str(path)


def test_param_shapes_match_torch_counts():
  shapes = I.param_shapes()
  assert len(shapes) == 5 * 94  # 94 BasicConv2d layers, conv kernel + 4 BatchNorm tensors each
  assert sum(int(np.prod(s)) for s in shapes.values()) == 21_820_000  # pytorch-fid minus the fc layer
  assert shapes["Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
  assert shapes["Mixed_6b/branch7x7_2/conv/kernel"] == (1, 7, 128, 128)
  assert shapes["Mixed_7c/branch3x3dbl_3b/conv/kernel"] == (3, 1, 384, 384)
  assert shapes["Mixed_7c/branch_pool/bn/var"] == (192,)


@pytest.mark.parametrize("hw", [(32, 32), (40, 24), (299, 299)])
def test_output_shape(hw):
  abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                          I.init_inception_params(jax.random.key(0)))
  assert jax.tree.structure(abstract) == jax.tree.structure(jax.eval_shape(
      lambda k: I.InceptionV3FID().init(k, jnp.zeros((1, I.SIZE, I.SIZE, 3)))["params"],
      jax.random.key(0)))
  out = jax.eval_shape(I.inception_features, abstract, jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32))
  assert out.shape == (2, I.FEATURE_DIM) and out.dtype == jnp.float32


def test_forward_uint8_and_batch_order(random_params):
  fn = I.make_feature_fn(random_params)
  u8 = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  f = np.asarray(I.features_from_uint8(fn, u8))
  assert f.shape == (2, 2048) and np.all(np.isfinite(f)) and np.all(f >= 0)  # mean of ReLU outputs
  assert np.abs(f[0] - f[1]).max() > 1e-3 * np.abs(f).max()  # different images, different features
  swapped = np.asarray(fn(jnp.asarray(u8[::-1], jnp.float32) / 127.5 - 1.0))  # no cross-example mixing
  np.testing.assert_allclose(swapped, f[::-1], rtol=1e-5, atol=1e-6 * np.abs(f).max())
  with pytest.raises(ValueError, match="expects uint8 images, got dtype float32"):
    I.features_from_uint8(fn, u8.astype(np.float32))


def test_load_roundtrip_and_missing_key(random_params, tmp_path):
  flat = I.flatten_params(random_params)
  loaded = I.load_inception_params(_save_flat(tmp_path / "ok.npz", flat))
  assert set(I.flatten_params(loaded)) == set(flat)
  for k, v in I.flatten_params(loaded).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(flat[k]))
  del flat["Mixed_6c/branch7x7dbl_3/bn/mean"]
  with pytest.raises(ValueError, match="missing Inception key 'Mixed_6c/branch7x7dbl_3/bn/mean'") as e:
    I.load_inception_params(_save_flat(tmp_path / "missing.npz", flat))
  assert "\n" not in str(e.value)


def test_load_wrong_shape_extra_key_and_format(random_params, tmp_path):
  flat = I.flatten_params(random_params)
  bad = dict(flat, **{"Conv2d_2a_3x3/conv/kernel": np.zeros((32, 32, 3, 3), np.float32)})  # OIHW, not HWIO
  with pytest.raises(ValueError, match=r"'Conv2d_2a_3x3/conv/kernel' has shape \(32, 32, 3, 3\), "
                                       r"expected \(3, 3, 32, 32\)") as e:
    I.load_inception_params(_save_flat(tmp_path / "bad.npz", bad))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"unexpected Inception keys \['fc/kernel'\]"):
    I.load_inception_params(_save_flat(tmp_path / "extra.npz", dict(flat, **{"fc/kernel": np.zeros(3)})))
  with pytest.raises(ValueError, match=r"must be an \.npz"):
    I.load_inception_params(tmp_path / "pt_inception-2015-12-05-6726825d.pth")


def test_grayscale_and_channel_checks(random_params):
  gray = jnp.linspace(-1, 1, 2 * 8 * 8).reshape(2, 8, 8, 1)
  fn = I.make_feature_fn(random_params)
  with pytest.raises(ValueError, match="repeat_grayscale") as e:
    fn(gray)
  assert "\n" not in str(e.value)
  rgb = I.repeat_grayscale(gray)
  assert rgb.shape == (2, 8, 8, 3)
  for c in range(3):
    np.testing.assert_array_equal(rgb[..., c], gray[..., 0])
  with pytest.raises(ValueError, match=r"expects \(B, H, W, 1\)"):
    I.repeat_grayscale(rgb)
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\) images, got shape \(8, 8, 3\)"):
    fn(rgb[0])
  with pytest.raises(ValueError, match=r"got shape \(2, 8, 8, 4\)"):
    fn(jnp.zeros((2, 8, 8, 4)))


def test_resize_matches_torch_bilinear_formula():
  """Upsampling 2 -> 299 with half-pixel centres: out[i] = in at src = (i + 0.5) * 2/299 - 0.5, clamped."""
  x = jnp.asarray([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
  y = np.asarray(I.resize_to_inception(x))[0, :, :, 0]
  src = np.clip((np.arange(299) + 0.5) * 2 / 299 - 0.5, 0, 1)  # torch's source coordinate, one axis
  expected = 2 * src[:, None] + src[None, :]  # bilinear of the plane 2*row + col
  np.testing.assert_allclose(y, expected, atol=1e-6)
  same = jnp.ones((1, 299, 299, 3))
  assert I.resize_to_inception(same) is same


def test_converter_mapping_without_torch():
  """convert_state_dict on numpy arrays in torch naming (both layouts) inverts to our keys and HWIO."""
  conv = _converter()
  rng = np.random.default_rng(3)
  ours = {k: rng.normal(size=s).astype(np.float32) for k, s in I.param_shapes().items()}
  back = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
  raw = {}
  for k, v in ours.items():
    *layer, module, p = k.split("/")
    raw[".".join([*layer, module, back[p]])] = v.transpose(3, 2, 0, 1) if p == "kernel" else v
  raw["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.zeros(())
  converted = conv.convert_state_dict(raw)
  assert set(converted) == set(ours)
  for k in ours:
    np.testing.assert_array_equal(converted[k], ours[k])
  wrapped = {k.replace("Mixed_7b.", "blocks.3.1.").replace("Conv2d_4a_3x3.", "blocks.1.1."): v
             for k, v in raw.items()}  # pytorch-fid's InceptionV3.blocks[i][j] naming
  assert any(k.startswith("blocks.3.1.") for k in wrapped)
  assert set(conv.convert_state_dict(wrapped)) == set(ours)
  del raw["Mixed_5b.branch_pool.bn.running_var"]
  with pytest.raises(ValueError, match="expected 94 conv layers"):
    conv.convert_state_dict(raw)
