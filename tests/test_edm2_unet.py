"""EDM2's U-Net and Precond (cmjax.models.edm2_unet / edm2_layers / edm2_precond): parameter counts
of the ImageNet-64 presets, outputs of a tiny configuration against NVlabs/edm2's PyTorch code
(D, the raw U-Net output, logvar, the train-mode forced weight normalisation), the weight reader,
dropout, bfloat16, the magnitude-preserving ops and the loss.

Frozen asset tests/assets/edm2_tiny.npz (22 KB): made by /work/scratch/edm2_gen/gen_edm2.py run as
  cd <clone of github.com/NVlabs/edm2 at commit 4bf8162f601bcc09472ce8a32dd0cbe8889dc8fc> &&
  python gen_edm2.py edm2_tiny.npz      (torch 2.13.0+cpu, float32, eval mode)
with training.networks_edm2.Precond(img_resolution=8, img_channels=3, label_dim=10,
model_channels=16, channel_mult=[1,2], num_blocks=1, attn_resolutions=[4], channels_per_head=8,
dropout=0.1, logvar_channels=16, use_fp16=False) -- 181,579 parameters, attention with 4 heads at
4x4. Instead of storing the weights, every state_dict entry (parameters AND the Fourier buffers,
in state_dict order) was filled with numpy draws from default_rng(seed) by the rule `_draw` below
(nonzero gains of both signs, including out_gain and emb_gain, which EDM2 initialises to 0;
weights at random scales so the weight normalisation is not the identity); the asset keeps the
torch names and shapes (the manifest), per-tensor sums (to check the redraw), the inputs x
(NHWC), sigma, int labels, and the outputs D (Precond with one-hot labels), D_none (labels None),
F (the bare UNet at c_in x, ln(sigma)/4), logvar (return_logvar=True), D_train (a train-mode
forward with the blocks' dropout set to 0, i.e. with EDM2's in-place forced weight normalisation)
and after_sums (the state_dict sums after that forward).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.models import edm2_layers as L
from cmjax.models.edm2_precond import EDM2Logvar, EDM2Preconditioner
from cmjax.models.edm2_unet import (EDM2UNet, edm2_config, edm2_force_normalize,
                                    edm2_params_from_torch, edm2_trainable_mask)

ASSET = "tests/assets/edm2_tiny.npz"

# sum(p.numel() for p in net.unet.parameters()) of NVlabs/edm2 (commit 4bf8162) Precond(64, 3,
# 1000, model_channels=C) built with their code (torch 2.13 CPU, random init), C = 128/192/256/
# 320/384 as train_edm2.py's edm2-img64-{xs,s,m,l,xl}; the Precond adds logvar_linear (128).
# Buffers (not counted): MPFourier freqs + phases = 2 C (U-Net) + 256 (logvar head).
# EDM2 paper Table 2 rounds them to 280M / 498M / 778M / 1119M (S/M/L/XL).
EDM2_IMG64_UNET = {"xs": 124_710_821, "s": 280_209_253, "m": 497_803_045, "l": 777_492_197,
                   "xl": 1_119_276_709}
TINY = dict(label_dim=10, model_channels=16, channel_mult=(1, 2), num_blocks=1,
            attn_resolutions=(4,), channels_per_head=8, dropout=0.1)


def _draw(rng, name, shape):
  """The generator's rule for one state_dict entry (see the module docstring)."""
  if name.endswith("gain"):
    return rng.uniform(0.4, 1.6, shape) * rng.choice([-1.0, 1.0], shape)
  if name.endswith("freqs"):
    return 2 * np.pi * rng.standard_normal(shape)
  if name.endswith("phases"):
    return 2 * np.pi * rng.uniform(0, 1, shape)
  return rng.uniform(0.2, 3.0) * rng.standard_normal(shape)


_CACHE = {}


def _asset():
  """(frozen arrays, torch-named weights redrawn from the manifest)."""
  if "asset" not in _CACHE:
    z = dict(np.load(ASSET))
    names = [str(n) for n in z["names"]]
    ends = np.cumsum(z["ndims"])
    shapes = [tuple(int(d) for d in z["shapes_flat"][e - n:e]) for n, e in zip(z["ndims"], ends)]
    rng = np.random.default_rng(int(z["seed"]))
    weights = {n: np.asarray(_draw(rng, n, s), np.float32).reshape(s)
               for n, s in zip(names, shapes)}
    np.testing.assert_allclose([w.sum(dtype=np.float64) for w in weights.values()], z["sums"],
                               rtol=1e-12, atol=1e-9)  # the redraw is what torch ran with
    _CACHE["asset"] = (z, weights)
  return _CACHE["asset"]


def _expected(model, precond, x):
  """{'unet', 'logvar'} parameter shapes (jax.eval_shape: nothing allocated)."""
  c = jnp.zeros(x.shape[:1])
  unet = jax.eval_shape(lambda: model.init(jax.random.key(0), x, c, class_labels=jnp.zeros(
      x.shape[:1], jnp.int32) if model.label_dim else None))["params"]
  return {"unet": unet, "logvar": jax.eval_shape(lambda: precond.init_logvar(jax.random.key(0)))}


def _loaded():
  """(asset, model, precond, converted params) of the tiny configuration."""
  if "loaded" not in _CACHE:
    z, weights = _asset()
    model, precond = EDM2UNet(**TINY), EDM2Preconditioner(logvar_channels=16)
    params = edm2_params_from_torch(weights, _expected(model, precond, jnp.asarray(z["x"])))
    _CACHE["loaded"] = (z, model, precond, params)
  return _CACHE["loaded"]


def _denoiser(model, precond):
  """jit(params, x, sigma, labels (B, label_dim) vectors, train, rng) -> D."""
  def fn(params, x, sigma, labels, key, train):
    net = lambda xi, c: model.apply({"params": params}, xi, c, train=train,  # noqa: E731
                                    class_labels=labels, rngs={"dropout": key})
    return precond(net, x, sigma)
  return jax.jit(fn, static_argnums=5)


def _rel(a, ref):
  """max |a - ref| / max |ref|."""
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _count(tree, trainable=True):
  """Number of parameters of `tree`: trainable ones (True) or the Fourier buffers (False)."""
  mask = jax.tree.leaves(edm2_trainable_mask(tree))
  return sum(int(np.prod(a.shape)) for a, m in zip(jax.tree.leaves(tree), mask) if m == trainable)


def _check_counts(names):
  x = jnp.zeros((1, 64, 64, 3))
  precond = EDM2Preconditioner()
  for name in names:
    cfg = edm2_config(name)
    assert cfg["dropout"] == (0.0 if name in ("xs", "s") else 0.10)
    shapes = _expected(EDM2UNet(**cfg), precond, x)
    assert _count(shapes["unet"]) == EDM2_IMG64_UNET[name], name
    assert _count(shapes["unet"], trainable=False) == 2 * cfg["model_channels"]
  assert _count(shapes["logvar"]) == 128 and _count(shapes["logvar"], False) == 256


@pytest.mark.slow
def test_imagenet64_parameter_counts_match_edm2():
  _check_counts(("xs", "xl"))  # the smallest and largest preset (2 s of tracing each)
  with pytest.raises(ValueError, match="unknown EDM2 ImageNet-64 preset"):
    edm2_config("xxl")
  with pytest.raises(ValueError, match="unknown EDM2UNet arguments"):
    edm2_config("s", channels=3)


@pytest.mark.slow
def test_imagenet64_parameter_counts_all_presets():
  _check_counts(("s", "m", "l"))


def test_matches_edm2_pytorch():
  z, model, precond, params = _loaded()
  unet = params["unet"]
  assert {"attn_qkv", "attn_proj", "conv_skip"} <= set(unet["enc_4x4_block0"])
  assert "attn_qkv" in unet["dec_4x4_in0"] and "attn_qkv" not in unet["dec_4x4_in1"]
  assert "attn_qkv" not in unet["enc_8x8_block0"] and "conv_skip" not in unet["enc_4x4_down"]
  assert unet["enc_8x8_conv"]["kernel"].shape == (3, 3, 4, 16)  # image + constant-1 channel
  assert float(unet["out_gain"]) != 0 and float(unet["dec_8x8_up"]["emb_gain"]) != 0
  x, sigma = jnp.asarray(z["x"]), jnp.asarray(z["sigma"])
  onehot = jax.nn.one_hot(jnp.asarray(z["labels"]), 10)
  den = _denoiser(model, precond)
  key = jax.random.key(0)
  assert _rel(den(unet, x, sigma, onehot, key, False), z["D"]) < 1e-5
  assert _rel(den(unet, x, sigma, jnp.zeros((4, 10)), key, False), z["D_none"]) < 1e-5
  # The bare U-Net at (c_in x, ln(sigma) / 4) with int labels (one-hot inside).
  c_in, c_noise = precond.coefficients(sigma)[2:]
  F = jax.jit(model.apply)({"params": unet}, x * c_in[:, None, None, None], c_noise,
                           class_labels=jnp.asarray(z["labels"]))
  assert _rel(F, z["F"]) < 1e-5
  assert _rel(precond.logvar(params["logvar"], sigma), z["logvar"]) < 1e-5
  assert _rel(z["D_none"], z["D"]) > 1e-2  # the labels matter


def test_forced_weight_normalisation_matches_edm2_train_mode():
  z, model, precond, params = _loaded()
  x, sigma = jnp.asarray(z["x"]), jnp.asarray(z["sigma"])
  onehot = jax.nn.one_hot(jnp.asarray(z["labels"]), 10)
  projected = edm2_force_normalize(params["unet"])
  # EDM2's train-mode forward (dropout 0) = our pure forward on the projected kernels; distinct
  # from the eval output at this tolerance (the eps of the double normalisation).
  D = _denoiser(model, precond)(projected, x, sigma, onehot, jax.random.key(0), False)
  assert _rel(D, z["D_train"]) < 1e-5 and _rel(z["D_train"], z["D"]) > 2e-5
  # The state after EDM2's forward: the kernels normalised, gains and buffers untouched.
  _, weights = _asset()
  sums = dict(zip([str(n) for n in z["names"]], z["after_sums"]))
  conv = "unet.dec.4x4_block0.conv_res0.weight"
  np.testing.assert_allclose(float(jnp.sum(projected["dec_4x4_block0"]["conv_res0"]["kernel"])),
                             sums[conv], rtol=1e-5)
  assert abs(sums[conv] - weights[conv].sum()) > 1.0
  assert float(projected["out_gain"]) == float(params["unet"]["out_gain"]) == sums["unet.out_gain"]
  np.testing.assert_array_equal(projected["emb_fourier"]["freqs"],
                                params["unet"]["emb_fourier"]["freqs"])
  k = np.asarray(projected["enc_4x4_block0"]["attn_qkv"]["kernel"])  # (1, 1, 32, 96)
  rms = np.sqrt(np.mean(k.reshape(-1, 96) ** 2, axis=0))
  np.testing.assert_allclose(rms, 1.0, atol=1e-3)  # unit RMS per output channel (minus eps)
  # The logvar head (not run by that forward, so its torch sums are unchanged) projects alike.
  lv = np.asarray(edm2_force_normalize(params["logvar"])["logvar_linear"]["kernel"])  # (16, 1)
  np.testing.assert_allclose(np.sqrt(np.mean(lv**2)), 1.0, atol=1e-3)
  assert np.max(np.abs(lv - weights["logvar_linear.weight"].T)) > 1e-2


def test_reader_rejects_bad_weights():
  z, weights = _asset()
  model, precond = EDM2UNet(**TINY), EDM2Preconditioner(logvar_channels=16)
  expected = _expected(model, precond, jnp.asarray(z["x"]))
  with pytest.raises(ValueError, match="unknown EDM2 parameter name 'unet.enc.8x8_conv.bias'"):
    edm2_params_from_torch({**weights, "unet.enc.8x8_conv.bias": np.zeros(16)})
  bad = dict(weights)
  bad["unet.emb_noise.weight"] = bad["unet.emb_noise.weight"].T
  with pytest.raises(ValueError, match="'emb_noise/kernel' has shape"):
    edm2_params_from_torch(bad, expected)
  missing = {k: v for k, v in weights.items() if k != "unet.out_gain"}
  with pytest.raises(ValueError, match=r"missing \['out_gain'\]"):
    edm2_params_from_torch(missing, expected)
  # A bare UNet state_dict (no 'unet.' prefix) gives the same U-Net and no logvar head.
  bare = {k[5:]: v for k, v in weights.items() if k.startswith("unet.")}
  out = edm2_params_from_torch(bare, {"unet": expected["unet"]})
  assert out["logvar"] == {}
  np.testing.assert_array_equal(out["unet"]["dec_4x4_in0"]["attn_qkv"]["kernel"],
                                weights["unet.dec.4x4_in0.attn_qkv.weight"].transpose(2, 3, 1, 0))


def test_dropout_only_in_train_mode():
  z, model, precond, params = _loaded()
  x, sigma = jnp.asarray(z["x"]), jnp.asarray(z["sigma"])
  onehot = jax.nn.one_hot(jnp.asarray(z["labels"]), 10)
  den = _denoiser(model, precond)
  ev = den(params["unet"], x, sigma, onehot, jax.random.key(1), False)
  np.testing.assert_array_equal(ev, den(params["unet"], x, sigma, onehot, jax.random.key(2), False))
  a = den(params["unet"], x, sigma, onehot, jax.random.key(1), True)
  b = den(params["unet"], x, sigma, onehot, jax.random.key(2), True)
  assert _rel(a, np.asarray(ev)) > 1e-3 and _rel(a, np.asarray(b)) > 1e-3
  # Rate 0 in training is the eval network (no forced normalisation inside the forward).
  off = _denoiser(EDM2UNet(**{**TINY, "dropout": 0.0}), precond)
  np.testing.assert_array_equal(off(params["unet"], x, sigma, onehot, jax.random.key(1), True), ev)
  # dropout_max_res (ECT): only blocks at level resolution <= R; R = 4 leaves the 8x8 blocks.
  m4 = EDM2UNet(**{**TINY, "dropout_max_res": 4})
  assert [m4.block_dropout(r) for r in (8, 4)] == [0.0, 0.1]
  assert [model.block_dropout(r) for r in (8, 4)] == [0.1, 0.1]


def _eqns(jaxpr) -> list:
  """Every equation of a jaxpr and of its sub-jaxprs (jit, custom_jvp, ...)."""
  out = []
  for eqn in jaxpr.eqns:
    out.append(eqn)
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else [p]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out.extend(_eqns(inner))
  return out


def test_bfloat16_params_and_input():
  """Params and x in bfloat16 (make_model_fn(compute_dtype=bfloat16)): convolutions run in
  bfloat16, the normalisations and softmax in float32; close to the float32 output."""
  z, model, precond, params = _loaded()
  x, sigma = jnp.asarray(z["x"]), jnp.asarray(z["sigma"])
  c_in, c_noise = precond.coefficients(sigma)[2:]
  xin = x * c_in[:, None, None, None]
  fn = jax.jit(lambda p, xx: model.apply({"params": p}, xx, c_noise,
                                         class_labels=jnp.asarray(z["labels"])))
  p16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params["unet"])
  out = fn(p16, xin.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  rel = np.linalg.norm(np.asarray(out, np.float32) - z["F"]) / np.linalg.norm(z["F"])
  assert 1e-4 < rel < 5e-2, rel
  eqns = _eqns(jax.make_jaxpr(fn)(p16, xin.astype(jnp.bfloat16)).jaxpr)
  convs = [e for e in eqns if e.primitive.name == "conv_general_dilated"]
  assert len(convs) > 10 and {str(e.outvars[0].aval.dtype) for e in convs} == {"bfloat16"}
  for prim in ("reduce_sum", "exp", "sqrt"):  # norms and softmax
    dts = {str(e.outvars[0].aval.dtype) for e in eqns if e.primitive.name == prim}
    assert dts == {"float32"}, (prim, dts)


def test_magnitude_preserving_ops_by_hand():
  a, b = jnp.full((1, 2, 2, 3), 2.0), jnp.full((1, 2, 2, 1), -1.0)
  np.testing.assert_allclose(L.mp_sum(a, b[..., :1] * jnp.ones(3), 0.3),
                             (0.7 * 2 - 0.3) / np.sqrt(0.49 + 0.09), rtol=1e-6)
  cat = np.asarray(L.mp_cat(a, b, 0.5))  # C = sqrt(4 / 0.5), wa = C * 0.5 / sqrt(3), wb = C * 0.5
  np.testing.assert_allclose(cat[0, 0, 0], [np.sqrt(8) / np.sqrt(3)] * 3 + [-np.sqrt(8) / 2],
                             rtol=1e-6)
  np.testing.assert_allclose(L.mp_silu(jnp.array([1.0])), [1 / (1 + np.exp(-1)) / 0.596], rtol=1e-6)
  v = jnp.array([[3.0, 4.0]])  # ||v|| = 5, N = 2: v / (1e-4 + 5 / sqrt 2)
  np.testing.assert_allclose(L.normalize(v, 1), v / (1e-4 + 5 / np.sqrt(2)), rtol=1e-6)
  img = jnp.arange(16.0).reshape(1, 4, 4, 1)
  np.testing.assert_allclose(L.resample(img, "down")[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
  up = L.resample(jnp.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1), "up")[0, :, :, 0]
  np.testing.assert_array_equal(up[:2, :2], 1.0)
  np.testing.assert_array_equal(up[2:, 2:], 4.0)
  with pytest.raises(ValueError, match="unknown resample mode"):
    L.resample(img, "sideways")
  # MPFourier: sqrt(2) cos(c f + p) from its stored buffers, no gradient into them.
  f = L.MPFourier(4)
  fp = f.init(jax.random.key(0), jnp.zeros((1,)))["params"]
  c = jnp.array([0.3, -1.0])
  want = np.sqrt(2) * np.cos(np.outer(c, fp["freqs"]) + fp["phases"])
  np.testing.assert_allclose(f.apply({"params": fp}, c), want, rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda p: jnp.sum(f.apply({"params": p}, c) ** 2))(fp)
  assert not np.any(g["freqs"]) and not np.any(g["phases"])
  # clip_act clips each block's output, nothing else.
  emb, xb = jnp.ones((1, 8)), 50.0 * jax.random.normal(jax.random.key(1), (1, 4, 4, 8))
  blk = L.Block(8, clip_act=0.0)
  bp = blk.init(jax.random.key(2), xb, emb)
  free = blk.apply(bp, xb, emb)
  assert float(jnp.max(jnp.abs(free))) > 1.0
  np.testing.assert_array_equal(L.Block(8, clip_act=1.0).apply(bp, xb, emb), jnp.clip(free, -1, 1))


def test_uncertainty_loss_and_logvar_head():
  pc = EDM2Preconditioner(sigma_data=0.5, logvar_channels=8)
  lp = pc.init_logvar(jax.random.key(0))
  assert lp["logvar_linear"]["kernel"].shape == (8, 1)
  assert edm2_trainable_mask(lp)["logvar_fourier"] == {"freqs": False, "phases": False}
  rng = np.random.default_rng(0)
  d, y = rng.standard_normal((2, 2, 3, 2, 1)).astype(np.float32)  # B = 2
  s, u = np.array([0.1, 2.0], np.float32), np.array([0.5, -1.0], np.float32)
  lam = (s**2 + 0.25) / (s * 0.5) ** 2
  per_elem = lam[:, None, None, None] / np.exp(u)[:, None, None, None] * (d - y) ** 2 \
      + u[:, None, None, None]  # EDM2Loss, element by element
  d, y, s, u = map(jnp.asarray, (d, y, s, u))
  np.testing.assert_allclose(pc.loss(d, y, s, u), per_elem.sum((1, 2, 3)), rtol=1e-5)
  # u(s) = MPConv(MPFourier(ln(s) / 4)) by hand: sqrt(2) cos(c f + p) . w / (1e-4 + |w| / sqrt 8)
  # / sqrt 8, where |w| / sqrt(8) is the RMS normaliser of the (8, 1) kernel.
  f, ph = np.asarray(lp["logvar_fourier"]["freqs"]), np.asarray(lp["logvar_fourier"]["phases"])
  w = np.asarray(lp["logvar_linear"]["kernel"])[:, 0]
  feats = np.sqrt(2) * np.cos(np.outer(np.log(np.asarray(s)) / 4, f) + ph)
  want = feats @ (w / (1e-4 + np.linalg.norm(w) / np.sqrt(8))) / np.sqrt(8)
  np.testing.assert_allclose(pc.logvar(lp, s), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(EDM2Logvar(8).apply({"params": lp}, jnp.log(s) / 4), want, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(ValueError, match="EDM2 loss needs"):
    pc.loss(d, y, s, jnp.zeros((3,)))
  with pytest.raises(ValueError, match="EDM2 loss needs"):
    pc.loss(d, y[:, :1], s, u)


def test_bad_inputs():
  model = EDM2UNet(**TINY)
  x, c = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2,))
  lab = jnp.zeros((2,), jnp.int32)
  for kw, msg in ((dict(augment_labels=jnp.zeros((2, 2)), class_labels=lab), "augment_labels"),
                  (dict(c_noise_2=c, class_labels=lab), "c_noise_2"),
                  (dict(class_labels=jnp.zeros((2, 3))), "class_labels must be")):
    with pytest.raises(ValueError, match=msg):
      jax.eval_shape(lambda: model.init(jax.random.key(0), x, c, **kw))
  with pytest.raises(ValueError, match="H divisible by 2"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, 7, 7, 3)), c))
  with pytest.raises(ValueError, match="label_dim=0"):
    jax.eval_shape(lambda: EDM2UNet(**{**TINY, "label_dim": 0}).init(
        jax.random.key(0), x, c, class_labels=lab))
