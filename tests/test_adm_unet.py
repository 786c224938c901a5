"""ADMUNet (EDM's DhariwalUNet): the ImageNet-64 parameter count, outputs of a tiny configuration
against EDM's PyTorch code, class labels, dropout placement (dropout_max_res), the config
registry, and bfloat16 execution of both EDM networks (ADMUNet and SongUNet)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import golden_params
from cmjax.models.adm_unet import ADMUNet, adm_imagenet64
from cmjax.models.song_unet import ncsnpp_cifar10

# EDM's DhariwalUNet (NVlabs/edm training/networks.py, commit 0a2ff34) with train.py --arch=adm,
# 64x64x3, label_dim=1000, augment_dim=0 (README: --cond=1 --augment=0): 295,899,267 parameters,
# from `_edm_count` below (a shape-by-shape transcription of DhariwalUNet.__init__) and equal to
# sum(p.numel()) of a PyTorch transcription of EDM's classes. No exact published figure was found;
# papers quote it rounded (~296M).
EDM_ADM_IMAGENET64 = 295_899_267


def _edm_count(res=64, cin=3, cout_img=3, label_dim=1000, augment_dim=0, mc=192,
               mults=(1, 2, 3, 4), emb_mult=4, num_blocks=3, attn=(32, 16, 8)):
  """Parameters of EDM's DhariwalUNet.__init__, from its layer shapes (Linear/Conv2d/GroupNorm)."""
  lin = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
  conv = lambda i, o, k: k * k * i * o + o  # noqa: E731
  emb = mc * emb_mult

  def block(ci, co, attention=False):
    n = 2 * ci + conv(ci, co, 3) + lin(emb, 2 * co) + 2 * co + conv(co, co, 3)  # adaptive_scale
    n += conv(ci, co, 1) if ci != co else 0  # resample_proj=False: same-width skips have no weights
    heads = co // 64 if attention else 0
    return n + (2 * co + conv(co, 3 * co, 1) + conv(co, co, 1) if heads else 0)

  total = lin(mc, emb) + lin(emb, emb) + (lin(label_dim, emb, bias=False) if label_dim else 0)
  total += lin(augment_dim, mc, bias=False) if augment_dim else 0
  c, skips = cin, []
  for level, mult in enumerate(mults):
    r = res >> level
    if level == 0:
      total, c = total + conv(c, mc * mult, 3), mc * mult
    else:
      total += block(c, c)
    skips.append(c)
    for _ in range(num_blocks):
      total, c = total + block(c, mc * mult, attention=r in attn), mc * mult
      skips.append(c)
  for level in reversed(range(len(mults))):
    r = res >> level
    total += block(c, c, attention=True) + block(c, c) if level == len(mults) - 1 else block(c, c)
    for _ in range(num_blocks + 1):
      total, c = total + block(c + skips.pop(), mc * mults[level], r in attn), mc * mults[level]
  return total + 2 * c + conv(c, cout_img, 3)


def _shapes(model, res=64, channels=3, **kw):
  """The params pytree as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
  x, c = jnp.zeros((1, res, res, channels)), jnp.zeros((1,))
  return jax.eval_shape(lambda k: model.init(k, x, c, **kw), jax.random.key(0))["params"]


def _count(model, **kw):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(_shapes(model, **kw)))


def test_imagenet64_parameter_count_matches_edm():
  assert _edm_count() == EDM_ADM_IMAGENET64
  model = adm_imagenet64()
  assert (model.model_channels, tuple(model.channel_mult), model.num_blocks, model.label_dim,
          model.augment_dim, model.dropout) == (192, (1, 2, 3, 4), 3, 1000, 0, 0.10)
  assert _count(model) == EDM_ADM_IMAGENET64
  assert _count(adm_imagenet64(dropout_max_res=16)) == EDM_ADM_IMAGENET64  # dropout: no params
  assert (_count(adm_imagenet64(label_dim=0, augment_dim=9))
          == _edm_count(label_dim=0, augment_dim=9))
  with pytest.raises(ValueError, match="unknown ADMUNet arguments"):
    adm_imagenet64(channels=64)


# 16x16x3: level 0 (16x16, 32 channels: attention requested but 32 // 64 = 0 heads, as in EDM),
# level 1 (8x8, 128 channels: 2 heads); a weightless resampling skip in 8x8_down and 16x16_up.
TINY = dict(model_channels=32, channel_mult=(1, 4), num_blocks=1, attn_resolutions=(16, 8),
            dropout=0.0, label_dim=5, augment_dim=2)




def _tiny_inputs():
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((2, 16, 16, 3)).astype(np.float32))
  aug = jnp.asarray(rng.standard_normal((2, 2)).astype(np.float32))
  return x, dict(class_labels=jnp.array([3, 0]), augment_labels=aug)


_MODELS = {}


def _apply(params, x, noise, train=False, rngs=None, capture=None, class_labels=None,
           **overrides):
  """ADMUNet(**TINY, **overrides).apply with _tiny_inputs' labels (unless class_labels is given)
  and augmentation labels, jitted once per configuration (each compile takes about 1 s)."""
  key = (tuple(sorted(overrides.items())), capture is not None)
  if key not in _MODELS:
    model = ADMUNet(**{**TINY, **overrides})
    cap = dict(capture_intermediates=capture, mutable=["intermediates"]) if capture else {}
    _MODELS[key] = jax.jit(lambda p, x, c, l, a, r, t: model.apply(
        {"params": p}, x, c, train=t, class_labels=l, augment_labels=a, rngs=r, **cap),
        static_argnums=6)
  kw = _tiny_inputs()[1]
  labels = kw["class_labels"] if class_labels is None else class_labels
  return _MODELS[key](params, x, noise, labels, kw["augment_labels"], rngs or {}, train)


# Output of EDM's own PyTorch DhariwalUNet (training/networks.py, commit 0a2ff34; torch 2.13 CPU,
# float32) for TINY with the `golden_params` weights loaded into it (Dense (in, out) -> Linear
# (out, in), Conv (k, k, in, out) -> (out, in, k, k)), c_noise = [-0.7, 0.4]:
# out[0, 0, :3, 0], sum(out), sum(|out|). ADMUNet agreed to 1.2e-6 relative (max abs 3e-6).
EDM_TORCH_GOLDEN = ([0.081387, -0.196387, 0.182880], -119.844803, 707.586670)
NOISE = jnp.array([-0.7, 0.4])


def test_matches_edm_pytorch_outputs():
  x, kw = _tiny_inputs()
  params = golden_params(ADMUNet(**TINY), x, **kw)
  assert {"qkv", "proj"} <= set(params["dec_8x8_in0"]) and "qkv" not in params["dec_8x8_in1"]
  assert "qkv" not in params["enc_16x16_block0"] and "skip" not in params["enc_8x8_down"]
  out = _apply(params, x, NOISE)
  corner, total, abs_total = EDM_TORCH_GOLDEN
  np.testing.assert_allclose(out[0, 0, :3, 0], corner, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(out.sum()), total, rtol=1e-4)
  np.testing.assert_allclose(float(jnp.abs(out).sum()), abs_total, rtol=1e-4)


def test_init_and_class_labels():
  # EDM init: zero output layers (so the network starts at exactly 0), kaiming-uniform * sqrt(1/3)
  # weights and biases (U(+-1/sqrt(fan_in))), N(0, 1) label embedding. A small model: one compile.
  small = ADMUNet(model_channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=(),
                  label_dim=50, augment_dim=2)
  x, kw = _tiny_inputs()
  out, raw = jax.jit(small.init_with_output)(jax.random.key(0), x, NOISE, **kw)
  raw = raw["params"]
  assert out.shape == x.shape and not np.any(out)
  assert not np.any(raw["out_conv"]["kernel"]) and not np.any(raw["map_augment"]["kernel"])
  b = np.asarray(raw["map_layer1"]["bias"])  # fan_in 32
  assert np.abs(b).max() <= 1 / np.sqrt(32) and np.abs(b).max() > 0.5 / np.sqrt(32)
  assert abs(float(np.std(raw["map_label"]["kernel"])) - 1.0) < 0.1
  # Class labels: ints and one-hot rows are the same input, None is all-zero (label_vectors).
  from cmjax.models.song_layers import label_vectors
  np.testing.assert_array_equal(label_vectors(jnp.array([0, 3]), 2, 5),
                                jax.nn.one_hot(jnp.array([0, 3]), 5))
  np.testing.assert_array_equal(label_vectors(None, 2, 5), jnp.zeros((2, 5)))
  with pytest.raises(ValueError, match="class_labels"):
    label_vectors(jnp.zeros((2, 3)), 2, 5)
  params = golden_params(ADMUNet(**TINY), x, **kw)
  a = _apply(params, x, NOISE)
  b = _apply(params, x, NOISE, class_labels=jnp.array([3, 1]))
  np.testing.assert_array_equal(a[0], b[0])  # examples are independent
  assert float(jnp.max(jnp.abs(a[1] - b[1]))) > 1e-3  # same image, another class
  # label_dropout=1 drops every label in training: the class no longer matters.
  rngs = {"dropout": jax.random.key(9)}
  c = _apply(params, x, NOISE, True, rngs, label_dropout=1.0)
  d = _apply(params, x, NOISE, True, rngs, label_dropout=1.0, class_labels=jnp.array([3, 1]))
  np.testing.assert_allclose(c, d, rtol=1e-6, atol=1e-6)
  assert float(jnp.max(jnp.abs(c - a))) > 1e-3
  with pytest.raises(ValueError, match="dropout_max_res"):
    ADMUNet(**{**TINY, "dropout_max_res": -1}).init(jax.random.key(0), x, NOISE)


def _block_res(name: str) -> int:
  """'enc_16x16_block0' -> 16."""
  return int(name.split("_")[1].split("x")[0])


def test_block_dropout_rates():
  blocks = [k for k in _shapes(adm_imagenet64()) if k.startswith(("enc_", "dec_"))
            and not k.endswith("_conv")]
  assert len(blocks) == 15 + 21  # encoder 3 + 3 x 4, decoder 6 + 3 x 5
  for max_res, expect in ((0, 36), (64, 36), (32, 28), (16, 19), (8, 10), (4, 0)):
    model = adm_imagenet64(dropout_max_res=max_res)
    rates = [model.block_dropout(_block_res(b)) for b in blocks]
    assert sum(r > 0 for r in rates) == expect, max_res
    assert set(rates) <= {0.0, 0.10}


def test_dropout_only_in_blocks_up_to_max_res():
  x, kw = _tiny_inputs()
  params = golden_params(ADMUNet(**TINY), x, **kw)

  def enc(mdl, method):  # capture the outputs of the encoder's top-level layers
    return method == "__call__" and (mdl.name or "").startswith("enc_")

  def run(max_res, seed):
    out, state = _apply(params, x, NOISE, True, {"dropout": jax.random.key(seed)}, capture=enc,
                        dropout=0.3, dropout_max_res=max_res)
    return out, {k: v["__call__"][0] for k, v in state["intermediates"].items()}

  ev = _apply(params, x, NOISE)  # eval: no dropout whatever the rate
  a, a_enc = run(8, 1)
  b, b_enc = run(8, 2)
  for name in ("enc_16x16_conv", "enc_16x16_block0"):  # res 16 > 8: no dropout
    np.testing.assert_array_equal(a_enc[name], b_enc[name])
  for name in ("enc_8x8_down", "enc_8x8_block0"):  # res 8 <= 8: dropout
    assert float(jnp.max(jnp.abs(a_enc[name] - b_enc[name]))) > 1e-3
  assert float(jnp.max(jnp.abs(a - b))) > 1e-3 and float(jnp.max(jnp.abs(a - ev))) > 1e-3
  # Below every resolution: train=True is the eval network. 0 = dropout in every block.
  np.testing.assert_allclose(run(4, 1)[0], ev, rtol=1e-6, atol=1e-6)
  c_enc, d_enc = run(0, 1)[1], run(0, 2)[1]
  assert float(jnp.max(jnp.abs(c_enc["enc_16x16_block0"] - d_enc["enc_16x16_block0"]))) > 1e-3


def test_chosen_by_name_in_the_config():
  """config.model.name = 'adm' builds ADMUNet from config.model (exactly its fields), and the
  shipped ImageNet-64 iCT config (ADM, as EDM's ImageNet-64 model) has EDM's parameter count
  (imagenet64_ect is on EDM2-S: its count is in test_paper_configs_build.py)."""
  from cmjax.configs import imagenet64_ict
  from cmjax.models import MODELS, build_model, model_config, model_fields

  assert MODELS["adm"] is ADMUNet
  c = model_config("adm", model_channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3,
                   attn_resolutions=(32, 16, 8), dropout=0.1, label_dim=1000, dropout_max_res=16)
  assert set(c.keys()) == {"name", *model_fields("adm")}
  m = build_model(c)
  assert isinstance(m, ADMUNet) and m.dropout_max_res == 16
  assert _count(m) == EDM_ADM_IMAGENET64
  assert _count(build_model(imagenet64_ict.get_config().model)) == EDM_ADM_IMAGENET64


def _ops(jaxpr) -> dict:
  """{primitive name: [(input dtypes, output dtype), ...]} over a jaxpr and its sub-jaxprs."""
  found = {}
  for eqn in jaxpr.eqns:
    sig = (tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype))
    found.setdefault(eqn.primitive.name, []).append(sig)
    for p in eqn.params.values():
      for sub in p if isinstance(p, (list, tuple)) else [p]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          for k, v in _ops(inner).items():
            found.setdefault(k, []).extend(v)
  return found


@pytest.mark.parametrize("kind", ["adm", "ncsnpp"])
def test_bfloat16_params_and_input(kind):
  """Params and x cast to bfloat16 (c_noise float32): the convolutions run in bfloat16, the output
  is bfloat16 and close to the float32 output (GroupNorm and softmax are float32 inside)."""
  x, kw = _tiny_inputs()
  if kind == "adm":
    params = golden_params(ADMUNet(**TINY), x, **kw)
    fn = lambda p, xx: _apply(p, xx, NOISE)  # noqa: E731
  else:  # FIR resampling, residual encoder, Fourier embedding, attention at 8x8, labels
    model = ncsnpp_cifar10(model_channels=16, channel_mult=(1, 2), num_blocks=1,
                           attn_resolutions=(8,), dropout=0.0, label_dim=5, augment_dim=2)
    params = golden_params(model, x, **kw)
    fn = jax.jit(lambda p, xx: model.apply({"params": p}, xx, NOISE, **kw))
  ref = fn(params, x)
  p16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  out = fn(p16, x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16 and out.shape == ref.shape
  out = np.asarray(out.astype(jnp.float32))
  assert np.all(np.isfinite(out))
  rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
  assert 1e-4 < rel < 5e-2, rel  # > 1e-4: it really ran in bfloat16
  ops = _ops(jax.make_jaxpr(fn)(p16, x.astype(jnp.bfloat16)).jaxpr)
  bf16 = (("bfloat16", "bfloat16"), "bfloat16")
  assert len(ops["conv_general_dilated"]) > 10 and set(ops["conv_general_dilated"]) == {bf16}
  # Attention logits: bfloat16 q, k with float32 results; softmax and GroupNorm reductions float32.
  assert (("bfloat16", "bfloat16"), "float32") in ops["dot_general"]
  assert {d for k in ("exp", "reduce_sum", "reduce_max", "rsqrt") for _, d in ops[k]} == {"float32"}
