"""cmjax.lpips: parity with the torch `lpips` package (VGG, v0.1), weight loading, and loss properties.

The parity tests need torch + torchvision + lpips and are skipped without them (the importorskip lives in
their fixture, so the weight-loading and property tests below still run where torch is absent). They use a
random, seeded VGG16 backbone (pnet_rand=True: nothing is downloaded) with random biases added so the bias
conversion is exercised, and the real v0.1 lin weights shipped in the lpips package.
Tolerance: |ours - torch| <= 1e-4 * |torch| + 1e-7 per distance; features: max|diff| <= 1e-4 * max|torch|.
"""
from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import lpips as L
from cmjax.param_files import unflatten_params
from _helpers import load_script

RTOL, ATOL = 1e-4, 1e-7


def _converter():
  return load_script("convert_lpips_weights")


@pytest.fixture(scope="module")
def torch_and_params(tmp_path_factory):
  """(torch LPIPS model, our params loaded from the converted .npz)."""
  torch = pytest.importorskip("torch")
  if importlib.util.find_spec("lpips") is None:
    pytest.skip("lpips not installed")
  conv = _converter()
  model = conv.build_torch_lpips(random_backbone=True, seed=0)
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():  # torchvision inits biases to 0; make them nonzero so their conversion is tested
    for m in model.net.modules():
      if isinstance(m, torch.nn.Conv2d):
        m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=gen))
  path = str(tmp_path_factory.mktemp("lpips") / "lpips_rand.npz")
  conv.save(conv.convert_state_dict(model), path)
  return model, L.load_lpips_params(path)


def _image_pairs(n: int, size: int, seed: int):
  """n random pairs of NCHW float32 images in [-1, 1], plus one identical pair at the end."""
  rng = np.random.default_rng(seed)
  x0 = rng.uniform(-1, 1, (n + 1, 3, size, size)).astype(np.float32)
  x1 = rng.uniform(-1, 1, (n + 1, 3, size, size)).astype(np.float32)
  x1[n] = x0[n]
  return x0, x1


def _nhwc(x: np.ndarray) -> jax.Array:
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def test_parity_distances_and_per_layer(torch_and_params):
  import torch
  model, params = torch_and_params
  x0, x1 = _image_pairs(4, 64, seed=0)
  with torch.no_grad():
    ref, ref_layers = model(torch.from_numpy(x0), torch.from_numpy(x1), retPerLayer=True)
  ref = ref.numpy().reshape(-1)
  ref_layers = np.stack([r.numpy().reshape(-1) for r in ref_layers])
  ours, ours_layers = L.LPIPS().apply({"params": params}, _nhwc(x0), _nhwc(x1), return_per_layer=True)
  ours, ours_layers = np.asarray(ours), np.asarray(ours_layers)
  print(f"distances torch {ref} | max abs diff {np.abs(ours - ref).max():.3g}, "
        f"max rel diff {np.max(np.abs(ours - ref)[:4] / np.abs(ref[:4])):.3g}")
  assert np.all(ref[:4] > 0) and ref[4] == 0.0
  np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(ours_layers, ref_layers, rtol=RTOL, atol=ATOL)
  assert ours[4] == 0.0
  via_fn = np.asarray(L.make_lpips_distance(params)(_nhwc(x0), _nhwc(x1)))
  np.testing.assert_allclose(via_fn, ref, rtol=RTOL, atol=ATOL)


def test_parity_vgg_features(torch_and_params):
  import torch
  model, params = torch_and_params
  x0, _ = _image_pairs(1, 64, seed=1)
  with torch.no_grad():
    ref = model.net(model.scaling_layer(torch.from_numpy(x0)))
  ours = L.VGG16Features().apply({"params": params["vgg"]}, L.scale_input(_nhwc(x0)))
  assert len(ours) == len(ref) == 5
  for name, o, r in zip(L.LAYER_NAMES, ours, ref):
    r = r.numpy().transpose(0, 2, 3, 1)
    assert o.shape == r.shape, name
    err = np.abs(np.asarray(o) - r).max() / np.abs(r).max()
    print(f"{name}: max|diff| / max|torch| = {err:.3g}")
    assert err <= RTOL, name


def test_parity_with_resize(torch_and_params):
  import torch
  import torch.nn.functional as F
  model, params = torch_and_params
  x0, x1 = _image_pairs(1, 40, seed=2)
  with torch.no_grad():
    up = [F.interpolate(torch.from_numpy(x), size=56, mode="bilinear", align_corners=False) for x in (x0, x1)]
    ref = model(*up).numpy().reshape(-1)
  ours = np.asarray(L.make_lpips_distance(params, resize=56)(_nhwc(x0), _nhwc(x1)))
  np.testing.assert_allclose(ours, ref, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- without torch


@pytest.fixture(scope="module")
def random_params():
  """He-scaled random params built from the expected shapes (no VGG forward pass); lin weights >= 0."""
  rng = np.random.default_rng(0)
  flat = {k: np.abs(rng.normal(size=s)) if k.startswith("lin") else rng.normal(size=s) * np.sqrt(2 / np.prod(s[:-1]))
          for k, s in L.param_shapes().items()}
  return unflatten_params({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()})


# params as a runtime argument (not closed-over constants) so the persistent compilation cache stays small
_dist = jax.jit(L.lpips_distance, static_argnames="resize")
_grad = jax.jit(jax.grad(lambda p, x, y: jnp.sum(L.lpips_distance(p, x, y)), argnums=1))


def _save_flat(path, flat):
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})
  return str(path)


def test_load_roundtrip_and_missing_key(random_params, tmp_path):
  flat = L.flatten_params(random_params)
  assert len(flat) == 31 and set(flat) == set(L.param_shapes())
  loaded = L.load_lpips_params(_save_flat(tmp_path / "ok.npz", flat))
  for k, v in L.flatten_params(loaded).items():
    np.testing.assert_array_equal(np.asarray(v), np.asarray(flat[k]))
  del flat["vgg/conv3_2/bias"]
  with pytest.raises(ValueError, match="missing LPIPS key 'vgg/conv3_2/bias'") as e:
    L.load_lpips_params(_save_flat(tmp_path / "missing.npz", flat))
  assert "\n" not in str(e.value)


def test_load_wrong_shape_and_format(random_params, tmp_path):
  flat = L.flatten_params(random_params)
  flat["lin2/kernel"] = np.zeros((256,), np.float32)
  with pytest.raises(ValueError, match=r"'lin2/kernel' has shape \(256,\), expected \(1, 1, 256, 1\)") as e:
    L.load_lpips_params(_save_flat(tmp_path / "bad.npz", flat))
  assert "\n" not in str(e.value)
  with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
    L.load_lpips_params(tmp_path / "w.pth")
  if importlib.util.find_spec("safetensors") is None:
    with pytest.raises(ImportError, match="safetensors"):
      L.load_lpips_params(tmp_path / "w.safetensors")


@pytest.mark.slow
def test_identity_symmetry_and_finite_grad(random_params):
  k1, k2 = jax.random.split(jax.random.key(3))
  a = jax.random.uniform(k1, (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  b = jax.random.uniform(k2, (2, 32, 32, 3), minval=-1.0, maxval=1.0)
  d = _dist(random_params, jnp.concatenate([a, b, a]), jnp.concatenate([b, a, a]))  # one call: ab, ba, aa
  d_ab, d_ba, d_aa = np.split(np.asarray(d), 3)
  assert np.all(d_ab > 0)
  np.testing.assert_allclose(d_ab, d_ba, rtol=1e-5)
  np.testing.assert_array_equal(d_aa, np.zeros(2))
  # rows 2-3 have a == b: zero feature differences (and possibly all-zero relu features); still finite
  g = _grad(random_params, jnp.concatenate([a, a]), jnp.concatenate([b, a]))
  assert g.shape == (4, 32, 32, 3) and bool(jnp.all(jnp.isfinite(g)))
  assert float(jnp.max(jnp.abs(g[:2]))) > 0


def test_channel_checks_and_resize(random_params):
  gray = jnp.linspace(-1, 1, 2 * 32 * 32).reshape(2, 32, 32, 1)
  with pytest.raises(ValueError, match="repeat_grayscale"):
    _dist(random_params, gray, gray)
  rgb = L.repeat_grayscale(gray)
  assert rgb.shape == (2, 32, 32, 3)
  np.testing.assert_array_equal(rgb[..., 2], gray[..., 0])
  with pytest.raises(ValueError, match="equal shapes"):
    _dist(random_params, rgb, rgb[:1])
  small = rgb[:, ::4, ::4]  # 8x8: too small for relu5_3 unless resized
  with pytest.raises(ValueError, match=">= 16"):
    _dist(random_params, small, small)
  ref = _dist(random_params, small, small[::-1], resize=16)
  d = L.make_lpips_distance(random_params, resize=16)  # the closure form, as objectives call it
  np.testing.assert_allclose(d(small, small[::-1]), ref, rtol=1e-5)
  assert ref.shape == (2,) and np.all(np.asarray(ref) > 0)
