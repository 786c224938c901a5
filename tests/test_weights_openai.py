"""OpenAI's consistency-model checkpoints read into cmjax networks (cmjax.weights.openai_cm):
the imported network reproduces the authors' own outputs, the released architectures map
completely, and files that do not fit give one line.

Frozen assets (tests/assets/openai_cm_*), made with torch 2.13.0+cpu by the generator scripts in
/work/scratch/openai_cm_gen/ from github.com/openai/consistency_models @
e32b69ee436d518377db86fb2127a3972d0d8716 (on sys.path):
  `python gen_cm_imagenet.py OUT` -> openai_cm_tiny.pt / .npz: their `cm.unet.UNetModel` with
    image_size=8, model_channels=32, channel_mult=(1, 1), num_res_blocks=1, attention at 4x4
    (attention_resolutions=(2,) as downsample rates), num_head_channels=16 (2 heads),
    num_classes=4, use_scale_shift_norm=True, resblock_updown=True, dropout 0, fp32; every
    parameter randomised (torch seed 0: weights N(0, 1/fan_in), label embedding N(0, 1),
    GroupNorm scales 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)) and rounded to float16, the state
    dict saved as float16 with torch.save. Outputs in float32 from those weights of their
    `KarrasDenoiser(sigma_data=0.5, sigma_min=0.002).denoise(model, x_t, sigmas, y=labels)`,
    distillation=True (consistency function, D_cm) and False (EDM scalings, D_edm), and the
    network output F; x = U(-1, 1) + sigma N(0, 1) (numpy seed 7), sigma = [0.002, 0.3, 2, 80],
    labels [0, 3, 1, 2]; stored NHWC. Their attention runs flash-attn (CUDA only): the script
    replaces `flash_attn.flash_attention.FlashAttention` by its exact math, softmax(q k^T /
    sqrt(d)) v on the (B, S, 3, H, D) qkv, and stubs piq / torchvision / blobfile / mpi4py
    (imported by the training code, unused here).
  `python gen_cm_lsun.py OUT` -> openai_cm_lsun_tiny.pt.xz / .npz: an LSUN-256-style network,
    their `cm.script_util.create_model` with the LSUN-256 README flags shrunk (image_size=8,
    num_channels=32, channel_mult="1,2" (at 64 channels a GroupNorm32 group holds 2 channels, so
    the embedding added before it matters; with one channel per group the norm would remove it),
    num_res_blocks=1, attention_resolutions="8" (attention at 8x8 in encoder and decoder, and in
    the 4x4 middle block), num_head_channels=16 (2 / 4 heads), class_cond=False,
    use_scale_shift_norm=False (the embedding added before the second GroupNorm),
    resblock_updown=True, dropout 0, fp32; 724,003 parameters); weights from torch seed 1
    (kernels round(0.75 N(0, 1)) / 0.75 / sqrt(fan_in), quantised so the file compresses;
    GroupNorm scales 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)), `torch.save(model.state_dict())` in
    float32 (as guided-diffusion writes checkpoints), stored xz-compressed (the test decompresses
    it to a temporary .pt). Outputs D_cm, D_edm and F of `KarrasDenoiser.denoise` as above, no
    labels, x = U(-1, 1) + sigma N(0, 1) (numpy seed 11), same sigmas; same shims.
  `python gen_cm_shapes.py OUT` -> openai_cm_shapes.json: state-dict names and shapes of
    `cm.script_util.create_model` with the README's ImageNet-64 and LSUN-256 flags (meta device).
  `/work/main/.venv/bin/python gen_cm10.py OUT` (github.com/openai/consistency_models_cifar10 @
    d086e77dfdc30b51671685f9eec90c90d4f4eaa6 on sys.path, run with the cmjax venv's jax 0.10.2 /
    flax 0.12.8 instead of their pinned jax 0.4.10; `haiku` and `blobfile` stubbed as empty
    modules, imported by jcm/models/utils.py and jcm/utils.py but unused here) ->
    openai_cm10_tiny.msgpack / .npz: their `jcm.models.ncsnpp.NCSNpp` with configs/cifar10_ve_cd.py
    and nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size 8, dropout 0;
    params_ema randomised from numpy seed 1 (kernels N(0, 1/fan_in), Fourier W 16 N(0, 1),
    GroupNorm scales 1 + 0.1 N(0, 1), biases 0.1 N(0, 1)), params (the online weights) from seed
    2, written as their `State(step, lr, ema_rate, params, params_ema, model_state={},
    opt_state={}, rng_state)` by flax.serialization.to_bytes (float32). Outputs of their
    `get_distiller_fn` (D_cm) and `get_denoiser_fn` (D_edm) with KVESDE(t_min=0.002, data_std=0.5)
    and the network output F at x = U(-1, 1) + t N(0, 1) (numpy seed 5), t = [0.002, 0.3, 2, 80].
cmjax's ADMUNet has EDM's rules min(32, C // 4) GroupNorm groups and 64 channels per attention
head; the tiny network has 32-channel GroupNorms (CM: 32 groups) and 16-channel heads, so where
ADMUNet has no `norm_groups` / `channels_per_head` field the parity test substitutes CM's rules
into cmjax's layers for the test (as tests/test_weights_edm.py does for the Fourier frequencies);
test_released_flags_map_completely and test_lsun256_file_maps_and_loads_wherever_a_run_takes_weights
check that the released networks need neither.
"""
import json
import lzma
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.errors import WeightsFileError
from cmjax.weights import openai_cm, openai_cm_torch
from cmjax.weights.openai_cm import (OpenAICMPreconditioner, cm_preconditioner, load_openai_cm,
                                     make_model, torch_to_cmjax)

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
TINY_FLAGS = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,1",
                  attention_resolutions="4", num_head_channels=16)


def _asset(name):
  return os.path.join(ASSETS, name)


def _cm_rules(monkeypatch, kwargs):
  """kwargs for an ADMUNet with CM's GroupNorm / head rules: through ADMUNet's fields when it
  has them, else by substituting the rules in cmjax's layers for this test."""
  from cmjax.models import adm_unet, model_fields, song_layers

  fields = model_fields("adm")
  kwargs = dict(kwargs)
  if "norm_groups" in kwargs and "norm_groups" not in fields:
    with pytest.raises(WeightsFileError, match="no 'norm_groups' field.*GroupNorm32"):
      make_model(kwargs)
    import flax.linen as nn
    groups = kwargs["norm_groups"]

    def group_norm(channels, eps, name, dtype=None):
      return nn.GroupNorm(num_groups=groups, epsilon=eps, dtype=dtype, name=name)
    monkeypatch.setattr(song_layers, "group_norm", group_norm)
    monkeypatch.setattr(adm_unet, "group_norm", group_norm)
    del kwargs["norm_groups"]
  return kwargs


def _tiny(monkeypatch):
  """(kwargs, params, precond) of the tiny asset, with CM's head width set up first."""
  from cmjax.models import adm_unet, model_fields

  if "channels_per_head" not in model_fields("adm"):
    with pytest.raises(WeightsFileError, match="no 'channels_per_head' field.*16 channels per "
                       "attention head"):
      load_openai_cm(_asset("openai_cm_tiny.pt"), **TINY_FLAGS)
    monkeypatch.setattr(adm_unet, "CHANNELS_PER_HEAD", 16)
  net = load_openai_cm(_asset("openai_cm_tiny.pt"), **TINY_FLAGS)
  assert net.model_kwargs["norm_groups"] == 32  # 32-channel GroupNorms: CM's 32 groups != 8
  return _cm_rules(monkeypatch, net.model_kwargs), net.params, net.precond


_NETS = {}


def _denoise(kwargs, params, precond, ref):
  """precond(F) on the reference inputs; F compiled once per model kwargs."""
  key = repr(sorted(kwargs.items()))
  if key not in _NETS:
    model = make_model(kwargs)
    _NETS[key] = jax.jit(lambda p, x, c, y: model.apply({"params": p}, x, c, class_labels=y))
  net = _NETS[key]
  labels = jnp.asarray(ref["class_labels"]) if "class_labels" in ref.files else None
  return np.asarray(precond(lambda x_in, c: net(params, x_in, c, labels), jnp.asarray(ref["x"]),
                            jnp.asarray(ref["sigma"])))


def _rel(a, b):
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_imported_network_reproduces_their_denoise(monkeypatch):
  kwargs, params, precond = _tiny(monkeypatch)
  assert kwargs["name"] == "adm" and kwargs["label_dim"] == 4 and kwargs["num_blocks"] == 1
  assert precond == OpenAICMPreconditioner(0.5, 0.002)
  ref = np.load(_asset("openai_cm_tiny.npz"))
  d_cm = _denoise(kwargs, params, precond, ref)
  assert _rel(d_cm, ref["D_cm"]) <= 1e-5, _rel(d_cm, ref["D_cm"])
  np.testing.assert_array_equal(d_cm[0], ref["x"][0])  # f(x, sigma_min) = x exactly
  assert np.linalg.norm(d_cm[1:] - ref["x"][1:]) > 0.5 * np.linalg.norm(ref["D_cm"][1:])
  d_edm = _denoise(kwargs, params, cm_preconditioner(boundary=False), ref)
  assert _rel(d_edm, ref["D_edm"]) <= 1e-5, _rel(d_edm, ref["D_edm"])
  # The network output alone, fed CM's time input 1000 * 0.25 * log(sigma).
  s = ref["sigma"]
  f = _denoise(kwargs, params, lambda net, x, _: net(x / np.sqrt(s**2 + 0.25)[:, None, None, None],
                                                     jnp.asarray(250.0 * np.log(s))), ref)
  assert _rel(f, ref["F"]) <= 1e-5
  # Each correction matters: without the qkv permutation, or with EDM's c_noise, it breaks.
  monkeypatch.setattr(openai_cm_torch, "_qkv_to_cmjax", lambda a, heads: a)
  plain = load_openai_cm(_asset("openai_cm_tiny.pt"), **TINY_FLAGS).params
  assert _rel(_denoise(kwargs, plain, precond, ref), ref["D_cm"]) > 1e-3
  edm_time = openai_cm.OpenAICMPreconditioner(c_noise_scale=0.25)
  assert _rel(_denoise(kwargs, params, edm_time, ref), ref["D_cm"]) > 1e-3


def test_preconditioner_formulas_by_hand():
  x = jnp.ones((2, 1, 1, 1))
  s = jnp.array([0.002, 2.0])
  net = lambda x_in, c: jnp.stack([x_in[0] * 0 + c[0], x_in[1] * 0 + c[1]])  # F = c_noise
  got = cm_preconditioner()(net, x, s)[:, 0, 0, 0]
  c_skip = 0.25 / ((2.0 - 0.002) ** 2 + 0.25)
  c_out = (2.0 - 0.002) * 0.5 / np.sqrt(4.25)
  np.testing.assert_allclose(got, [1.0, c_skip + c_out * 250 * np.log(2.0)], rtol=1e-6)
  got = cm_preconditioner(boundary=False)(net, x, s)[:, 0, 0, 0]
  np.testing.assert_allclose(got[1], 0.25 / 4.25 + 2 * 0.5 / np.sqrt(4.25) * 250 * np.log(2.0),
                             rtol=1e-6)


def _fake_state(shapes):
  """name -> zero-stride float32 array of that shape (no memory for 300M parameters)."""
  return {k: np.broadcast_to(np.float32(0.5), tuple(s)) for k, s in shapes}


def test_released_flags_map_completely():
  """Their ImageNet-64 network (README flags, 295,899,267 parameters, EDM's ADM count) maps
  onto plain cmjax adm: every tensor has a place of its shape, nothing is missing, and neither
  GroupNorm groups nor heads need CM's rules (narrowest GroupNorm: 192 channels)."""
  info = json.load(open(_asset("openai_cm_shapes.json")))["imagenet64"]
  state = _fake_state(info["shapes"])
  assert sum(int(np.prod(s)) for _, s in info["shapes"]) == 295_899_267
  kwargs, params, _ = torch_to_cmjax("imagenet64.pt", state)  # the defaults are these flags
  assert kwargs == dict(name="adm", out_channels=0, label_dim=1000, augment_dim=0,
                        model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4,
                        num_blocks=3, attn_resolutions=(32, 16, 8), dropout=0.0,
                        label_dropout=0.0)
  n = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params))
  assert n == 295_899_267


def test_lsun256_file_maps_and_loads_wherever_a_run_takes_weights(tmp_path, monkeypatch):
  """Their LSUN-256 network (README flags, 526,304,771 parameters): a `.pt` named as released,
  read with no flags (as `sample.weights` / `train.init_from` read it: `load_network_file`),
  is plain cmjax adm with adaptive_scale=False: every tensor placed, nothing missing, no CM
  GroupNorm / head rules (narrowest GroupNorm 256 channels, 64 channels per head); config.model
  with those fields is the same backbone, one with scale-shift is not (one line)."""
  from cmjax.models import model_config
  from cmjax.weights.files import check_same_backbone, load_network_file

  bed = json.load(open(_asset("openai_cm_shapes.json")))["bedroom256"]
  assert bed["flags"]["use_scale_shift_norm"] is False and bed["flags"]["class_cond"] is False
  state = _fake_state(bed["shapes"])
  monkeypatch.setattr(openai_cm, "read_openai_torch", lambda path: state)
  path = tmp_path / "ct_bedroom256.pt"
  path.write_bytes(b"")  # the reader is replaced by the shapes of their create_model
  net = load_network_file(str(path), "sample.weights")
  kw = net.model_kwargs
  assert kw == dict(name="adm", out_channels=0, label_dim=0, augment_dim=0, model_channels=256,
                    channel_mult=(1, 1, 2, 2, 4, 4), channel_mult_emb=4, num_blocks=2,
                    attn_resolutions=(32, 16, 8), dropout=0.0, label_dropout=0.0,
                    adaptive_scale=False)
  assert net.precond == OpenAICMPreconditioner(0.5, 0.002)  # a ct_* file: CM's boundary scalings
  assert sum(int(np.prod(v.shape)) for v in jax.tree.leaves(net.params)) == 526_304_771
  assert net.params["dec_8x8_in0"]["affine"]["kernel"].shape == (1024, 1024)  # (E, C): added
  check_same_backbone(net, model_config("adm", **{k: v for k, v in kw.items() if k != "name"}),
                      "sample.weights")
  scale_shift = model_config("adm", **{k: v for k, v in kw.items() if k not in ("name",
                                                                                 "adaptive_scale")})
  with pytest.raises(WeightsFileError, match=r"^sample.weights: the file's network has "
                     r"model.adaptive_scale=False but the config has True$"):
    check_same_backbone(net, scale_shift, "sample.weights")
  # The flag given wrongly: the first tensor that does not fit, with both shapes.
  with pytest.raises(WeightsFileError, match=r"^bed.pt: parameter 'input_blocks.1.0.emb_layers.1"
                     r".weight' does not fit cmjax adm: expected \(512, 1024\), found "
                     r"\(256, 1024\)$"):
    torch_to_cmjax("bed.pt", state, use_scale_shift_norm=True)


LSUN_TINY_FLAGS = dict(image_size=8, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                       attention_resolutions="8", num_head_channels=16,
                       use_scale_shift_norm=False)


def _lsun_tiny(tmp_path):
  """The LSUN-style asset as their torch.save wrote it (stored xz-compressed) -> its path."""
  path = tmp_path / "openai_cm_lsun_tiny.pt"
  with lzma.open(_asset("openai_cm_lsun_tiny.pt.xz")) as f:
    path.write_bytes(f.read())
  return str(path)


def test_lsun_style_network_reproduces_their_denoise(tmp_path):
  """use_scale_shift_norm=False (additive embedding), unconditional, attention at an inner
  level: cmjax adm with adaptive_scale=False gives their D_cm, D_edm and F to <= 1e-5."""
  net = load_openai_cm(_lsun_tiny(tmp_path), **LSUN_TINY_FLAGS)
  kw = net.model_kwargs
  assert (kw["adaptive_scale"], kw["label_dim"], kw["channels_per_head"], kw["norm_groups"],
          kw["channel_mult"], kw["attn_resolutions"]) == (False, 0, 16, 32, (1, 2), (8,))
  assert net.params["dec_4x4_in0"]["affine"]["kernel"].shape == (128, 64)  # (E, C), not 2C
  assert "qkv" in net.params["enc_8x8_block0"] and "qkv" not in net.params["enc_4x4_block0"]
  ref = np.load(_asset("openai_cm_lsun_tiny.npz"))
  assert "class_labels" not in ref.files
  d_cm = _denoise(kw, net.params, net.precond, ref)
  assert _rel(d_cm, ref["D_cm"]) <= 1e-5, _rel(d_cm, ref["D_cm"])
  np.testing.assert_array_equal(d_cm[0], ref["x"][0])  # f(x, sigma_min) = x exactly
  d_edm = _denoise(kw, net.params, cm_preconditioner(boundary=False), ref)
  assert _rel(d_edm, ref["D_edm"]) <= 1e-5, _rel(d_edm, ref["D_edm"])
  s = ref["sigma"]
  f = _denoise(kw, net.params, lambda fn, x, _: fn(x / np.sqrt(s**2 + 0.25)[:, None, None, None],
                                                   jnp.asarray(250.0 * np.log(s))), ref)
  assert _rel(f, ref["F"]) <= 1e-5, _rel(f, ref["F"])
  # The added embedding matters in these outputs: without it (affine zeroed) they differ.
  no_emb = jax.tree_util.tree_map_with_path(
      lambda p, a: a * 0 if "affine" in jax.tree_util.keystr(p) else a, net.params)
  assert _rel(_denoise(kw, no_emb, net.precond, ref), ref["D_cm"]) > 1e-3


def test_files_that_do_not_fit_give_one_line(tmp_path, monkeypatch):
  from cmjax.models import adm_unet, model_fields
  from cmjax.weights.openai_cm import read_openai_torch

  if "channels_per_head" not in model_fields("adm"):
    monkeypatch.setattr(adm_unet, "CHANNELS_PER_HEAD", 16)
  path = _asset("openai_cm_tiny.pt")
  state = read_openai_torch(path)
  bad = dict(state)
  bad["input_blocks.1.0.in_layers.2.weight"] = np.zeros((32, 32, 1, 1), np.float16)
  with pytest.raises(WeightsFileError, match=r"^x.pt: parameter 'input_blocks.1.0.in_layers.2."
                     r"weight' does not fit cmjax adm: expected \(32, 32, 3, 3\), found "
                     r"\(32, 32, 1, 1\)$"):
    torch_to_cmjax("x.pt", bad, **TINY_FLAGS)
  with pytest.raises(WeightsFileError, match=r"parameter 'input_blocks.3.1.norm.weight' "
                     r"\(32,\) has no place in cmjax adm"):
    torch_to_cmjax("x.pt", state, **{**TINY_FLAGS, "num_res_blocks": 2})
  fewer = {k: v for k, v in state.items() if k != "out.2.bias"}
  with pytest.raises(WeightsFileError, match=r"lacks parameter 'out.2.bias' \(3,\)"):
    torch_to_cmjax("x.pt", fewer, **TINY_FLAGS)
  with pytest.raises(WeightsFileError, match=r"resblock_updown=False .* no cmjax"):
    torch_to_cmjax("x.pt", state, **{**TINY_FLAGS, "resblock_updown": False})
  with pytest.raises(WeightsFileError, match=r"unknown consistency_models flag\(s\) \['attn'\]"):
    torch_to_cmjax("x.pt", state, attn=(4,))
  # LSUN-style (additive embedding): the flag forgotten, or one tensor of another shape.
  lsun = read_openai_torch(_lsun_tiny(tmp_path))
  flags = {k: v for k, v in LSUN_TINY_FLAGS.items() if k != "use_scale_shift_norm"}
  with pytest.raises(WeightsFileError, match=r"^x.pt: parameter 'input_blocks.1.0.emb_layers.1."
                     r"weight' does not fit cmjax adm: expected \(64, 128\), found \(32, 128\)$"):
    torch_to_cmjax("x.pt", lsun, **flags)
  bad = {**lsun, "middle_block.0.emb_layers.1.weight": np.zeros((128, 128), np.float32)}
  with pytest.raises(WeightsFileError, match=r"^x.pt: parameter 'middle_block.0.emb_layers.1."
                     r"weight' does not fit cmjax adm: expected \(64, 128\), found \(128, 128\)$"):
    torch_to_cmjax("x.pt", bad, **LSUN_TINY_FLAGS)
  (tmp_path / "list.pt").write_bytes(open(_asset("edm_torch_zip.pt"), "rb").read())
  with pytest.raises(WeightsFileError, match="is not a named tensor"):
    load_openai_cm(str(tmp_path / "list.pt"))


CM10_CONFIG = dict(image_size=8, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))


def _song_model(kwargs, monkeypatch):
  """A SongUNet with the file's Fourier frequencies (its field, or the test_weights_edm patch)."""
  from cmjax.models import model_fields, song_unet

  freqs = np.asarray(kwargs["fourier_freqs"], np.float32)
  if "fourier_freqs" in model_fields("song_unet"):
    return make_model(kwargs)
  with pytest.raises(WeightsFileError, match="no 'fourier_freqs' field"):
    make_model(kwargs)

  def embedding(x, channels, scale, seed, *unused):
    args = x.astype(jnp.float32)[:, None] * jnp.asarray(2 * np.pi * freqs)[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  monkeypatch.setattr(song_unet, "fourier_embedding", embedding)
  return make_model({k: v for k, v in kwargs.items() if k != "fourier_freqs"})


def test_cifar10_checkpoint_reproduces_their_distiller(monkeypatch):
  from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner
  from cmjax.weights.openai_cm import read_openai_msgpack

  path = _asset("openai_cm10_tiny.msgpack")
  net = load_openai_cm(path, **CM10_CONFIG)
  kw = net.model_kwargs
  assert (kw["name"], kw["embedding_type"], kw["encoder_type"], kw["channel_mult_noise"],
          kw["resample_filter"]) == ("song_unet", "fourier", "residual", 2, (1, 3, 3, 1))
  assert net.precond == ConsistencyPreconditioner(0.5, 0.002)  # their c_noise = 0.25 log t
  w = read_openai_msgpack(path)["params_ema"]["GaussianFourierProjection_0"]["W"]
  np.testing.assert_array_equal(np.asarray(kw["fourier_freqs"], np.float32), w)
  seeded = np.random.default_rng(kw.get("fourier_seed", 0)).standard_normal(w.size) * 16
  assert np.abs(seeded - w).max() > 1.0  # a seeded draw would be another network
  model = _song_model(kw, monkeypatch)
  ref = np.load(_asset("openai_cm10_tiny.npz"))
  net_fn = jax.jit(lambda p, x, c: model.apply({"params": p}, x, c))

  def run(params, precond):
    return np.asarray(precond(lambda x_in, c: net_fn(params, x_in, c), jnp.asarray(ref["x"]),
                              jnp.asarray(ref["t"])))
  d_cm = run(net.params, net.precond)
  assert _rel(d_cm, ref["D_cm"]) <= 1e-5, _rel(d_cm, ref["D_cm"])
  np.testing.assert_array_equal(d_cm[0], ref["x"][0])  # f(x, t_min) = x exactly
  assert _rel(run(net.params, EDMPreconditioner(0.5)), ref["D_edm"]) <= 1e-5
  t = ref["t"]
  f = net_fn(net.params, ref["x"] / np.sqrt(t**2 + 0.25)[:, None, None, None], 0.25 * np.log(t))
  assert _rel(np.asarray(f), ref["F"]) <= 1e-5
  online = load_openai_cm(path, entry="params", **CM10_CONFIG)  # the non-EMA weights differ
  assert _rel(run(online.params, net.precond), ref["D_cm"]) > 1e-2


def test_cifar10_files_that_do_not_fit_give_one_line(tmp_path):
  from cmjax.weights.openai_cm import flax_to_cmjax, read_openai_msgpack

  path = _asset("openai_cm10_tiny.msgpack")
  data = open(path, "rb").read()
  (tmp_path / "half.msgpack").write_bytes(data[: len(data) // 2])
  with pytest.raises(WeightsFileError, match=r"half.msgpack: truncated or corrupt msgpack"):
    read_openai_msgpack(str(tmp_path / "half.msgpack"))
  state = read_openai_msgpack(path)
  with pytest.raises(WeightsFileError, match=r"^x: model.progressive='output_skip' has no cmjax "
                     r"song_unet equivalent"):
    flax_to_cmjax("x", state, progressive="output_skip", **CM10_CONFIG)
  with pytest.raises(WeightsFileError, match=r"^x: parameter 'Conv_1/kernel' does not fit cmjax "
                     r"song_unet: expected \(3, 3, 16, 3\), found \(3, 3, 8, 3\)$"):
    flax_to_cmjax("x", state, **{**CM10_CONFIG, "ch_mult": (2, 2)})  # the first in file order
  with pytest.raises(WeightsFileError, match=r"'GaussianFourierProjection_0/W' should be \(16,\), "
                     r"found \(8,\)"):
    flax_to_cmjax("x", state, **{**CM10_CONFIG, "nf": 16})
  with pytest.raises(WeightsFileError, match=r"^x: parameter 'ResnetBlockBigGANpp_1/Conv_2/bias' "
                     r"\(8,\) has no place in cmjax song_unet for this config$"):
    flax_to_cmjax("x", state, **{**CM10_CONFIG, "num_res_blocks": 2})
  with pytest.raises(WeightsFileError, match=r"no 'target_params' parameters"):
    flax_to_cmjax("x", state, entry="target_params", **CM10_CONFIG)
  with pytest.raises(WeightsFileError, match=r"unknown consistency_models_cifar10 model "
                     r"field\(s\) \['channels'\]"):
    flax_to_cmjax("x", state, channels=8)


def test_an_openai_edm_teacher_file_is_checked_as_a_cd_teacher(monkeypatch):
  """cd.teacher_file with one of OpenAI's EDM teachers (edm_*_ema.pt: a denoiser with CM's
  c_noise): its image shape comes from the file's flags (image_size, in_channels), so a teacher
  of other images is one line (it used to be an AttributeError on EDM-pickle-only fields)."""
  from cmjax import teacher
  from cmjax.configs import digits_cd
  from cmjax.errors import ConfigError
  from cmjax.objectives import build_objective

  net = load_openai_cm(_asset("openai_cm_tiny.pt"), boundary=False, **TINY_FLAGS)
  assert isinstance(net.precond, openai_cm.OpenAIEDMPreconditioner)
  monkeypatch.setattr(teacher, "load_network_file", lambda path, field: net)
  config = digits_cd.get_config()
  config.cd.teacher_file = "edm_tiny_ema.pt"
  with pytest.raises(ConfigError, match=r"^cd.teacher_file: the file's network makes \(8, 8, 3\) "
                     r"images, the data digits has \(8, 8, 1\)$"):
    teacher.teacher_from_file(config, build_objective(config), None)
