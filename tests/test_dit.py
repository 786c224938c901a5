"""DiT (cmjax.models.dit): parameter counts of the paper's sizes against the authors' PyTorch
model, outputs of a tiny configuration against the authors' code, the second time condition
against the shortcut models' DiT, initialisation, label dropout, bfloat16 execution, patch sizes,
and jit with the batch (and parameters) sharded over 8 simulated devices.

Frozen references (generator: /work/scratch/dit_ref/make_dit_assets.py, not in the repo):
* tests/assets/dit_torch_parity.npz (~135 KB): github.com/facebookresearch/DiT commit
  ed81ce2229091fd4ecc9a223645f95cf379d582b, models.py `DiT(input_size=8, patch_size=2,
  in_channels=4, hidden_size=32, depth=2, num_heads=4, mlp_ratio=4, class_dropout_prob=0.1,
  num_classes=10, learn_sigma=True / False)` with timm 1.0.31 and torch 2.13.0+cpu, float32,
  eval mode. EVERY parameter (the zero-initialised adaLN and final layers too) replaced by numpy
  draws (default_rng(2023)) rounded to float16, stored in the authors' names and layouts as
  'sd/<state_dict key>' (the learn_sigma=False model shares all but 'sd_nosigma/final_layer.
  linear.*'; 'sd/pos_embed' is the authors' own fixed table); inputs x (4, 8, 8, 4) NHWC, raw
  timesteps t = [3, 250.5, 517, 999], labels y = [1, 9, 10 (null class), 0]; outputs NHWC.
  Command: `cd /work/scratch/dit_ref && /work/scratch/torchenv/bin/python make_dit_assets.py
  torch` (torchvision's CUDA wheel does not load with the CPU torch, so the script stubs the
  torchvision names timm imports; DiT's PatchEmbed/Attention/Mlp use none of them).
* tests/assets/dit_shortcut_cond.npz (~82 KB): github.com/kvfrans/shortcut-models commit
  601004348667094e1b71f30942199759412d4432, model.py `DiT(patch_size=2, hidden_size=32, depth=1,
  num_heads=4, out_channels=4, num_classes=10, dtype=float32)` run with flax 0.12.8 / jax 0.10.2
  (einops 0.8.2 from a scratch dir; jax._src.core.as_named_shape, which their init calls and jax
  removed, patched to the identity); random float16-rounded weights of TimestepEmbedder_0 (t),
  TimestepEmbedder_1 (dt) and LabelEmbedder_0, and their returned activations time_embed,
  dt_embed, label_embed, conditioning (= te + ye + dte) for t, dt, y. Command:
  `cd /work/scratch/dit_ref && PYTHONPATH=pylib:shortcut /work/main/.venv/bin/python
  make_dit_assets.py shortcut`.
"""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import parallel
from cmjax.models.dit import (DiT, TimestepEmbedder, dit_config, dit_params_from_torch,
                              get_2d_sincos_pos_embed)
from cmjax.param_files import checked_params, flatten_params, unflatten_params

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")

# sum(p.numel()) of the authors' DiT (models.py, commit ed81ce2; torch meta device, nothing
# allocated) at 256px: latent 32x32x4, learn_sigma=True, num_classes=1000, class_dropout_prob=0.1;
# (all parameters, of which the frozen pos_embed). Paper Table 1: S 33M, B 130M, L 458M, XL 675M
# (Gflops differ by patch; the parameter count hardly does).
AUTHORS_COUNTS = {"S/2": (32_963_360, 98_304), "S/8": (33_148_160, 6_144),
                  "B/4": (130_475_648, 49_152), "L/2": (458_102_816, 262_144),
                  "XL/2": (675_129_632, 294_912), "XL/8": (675_683_072, 18_432)}
TABLE1_MILLIONS = {"S": 33, "B": 130, "L": 458, "XL": 675}

TINY = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
            class_dropout_prob=0.1, label_dim=10)


def _shapes(model, x_shape=(1, 32, 32, 4), **kw):
  """The params pytree as ShapeDtypeStructs (jax.eval_shape: nothing is allocated)."""
  x, c = jnp.zeros(x_shape), jnp.zeros(x_shape[:1])
  return jax.eval_shape(lambda k: model.init(k, x, c, **kw), jax.random.key(0))["params"]


def _count(tree) -> int:
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", sorted(AUTHORS_COUNTS))
def test_parameter_counts_match_the_authors_model(name):
  model = DiT(**dit_config(name, input_size=32, in_channels=4, label_dim=1000,
                           class_dropout_prob=0.1, learn_sigma=True))
  total, pos = AUTHORS_COUNTS[name]
  grid = 32 // model.patch_size
  assert pos == grid * grid * model.hidden_size  # the authors' pos_embed (1, N, D)
  labels = jnp.zeros((1,), jnp.int32)
  assert _count(_shapes(model, class_labels=labels)) == total - pos  # pos_embed: not a parameter
  assert abs(total / 1e6 - TABLE1_MILLIONS[name.split("/")[0]]) < 1  # Table 1, per model size


def test_dit_config_presets_and_errors():
  assert dit_config("XL/2") == dict(hidden_size=1152, depth=28, num_heads=16, patch_size=2)
  assert dit_config("S/8", label_dim=1000)["num_heads"] == 6
  assert dit_config("B/4")["hidden_size"] == 768 and dit_config("L/2")["depth"] == 24
  for bad in ("XXL/2", "B/3", "B"):
    with pytest.raises(ValueError, match="unknown DiT configuration"):
      dit_config(bad)
  with pytest.raises(ValueError, match="unknown DiT arguments"):
    dit_config("S/2", channels=3)


def _torch_asset():
  z = np.load(os.path.join(ASSETS, "dit_torch_parity.npz"))
  sd = {k[3:]: z[k] for k in z.files if k.startswith("sd/")}
  sd_nosigma = {**sd, **{k[len("sd_nosigma/"):]: z[k] for k in z.files
                         if k.startswith("sd_nosigma/") and not k.endswith("pos_embed")}}
  return z, {True: sd, False: sd_nosigma}


def _tiny_params(learn_sigma: bool, time_conditions: int = 1) -> dict:
  """The authors' randomised weights (dit_torch_parity.npz) mapped by dit_params_from_torch and
  checked against the model's parameter shapes; with time_conditions=2 the shortcut models'
  TimestepEmbedder_1 (dit_shortcut_cond.npz) as t2_embedder."""
  _, sds = _torch_asset()
  flat = flatten_params(dit_params_from_torch(sds[learn_sigma]))
  if time_conditions == 2:
    flat.update(_shortcut_flat(_shortcut_asset(), "TimestepEmbedder_1", "t2_embedder"))
  model = DiT(**TINY, learn_sigma=learn_sigma, time_conditions=time_conditions)
  expect = {k: v.shape for k, v in flatten_params(_shapes(model, (1, 8, 8, 4))).items()}
  return checked_params(flat, expect, "dit_torch_parity.npz", "DiT")


_JIT = {}


def _apply(params, x, c_noise, train=False, rngs=None, class_labels=None, c_noise_2=None,
           **overrides):
  """DiT(**TINY, **overrides).apply, jitted once per configuration and call pattern."""
  key = (tuple(sorted(overrides.items())), train, class_labels is None, c_noise_2 is None)
  if key not in _JIT:
    model = DiT(**{**TINY, **overrides})
    _JIT[key] = jax.jit(lambda p, x, c, r, y, c2: model.apply(
        {"params": p}, x, c, train=train, rngs=r, class_labels=y, c_noise_2=c2))
  return _JIT[key](params, x, c_noise, rngs or {}, class_labels, c_noise_2)


@pytest.mark.parametrize("learn_sigma", [True, False])
def test_matches_the_authors_pytorch_outputs(learn_sigma):
  z, _ = _torch_asset()
  params = _tiny_params(learn_sigma)
  for zero_init in (params["blocks_1"]["adaLN_modulation"], params["final_layer"]["linear"]):
    assert np.all(zero_init["kernel"] != 0)  # DiT's zero-initialised layers are randomised too
  out = _apply(params, jnp.asarray(z["x"]), jnp.asarray(z["t"]),
               class_labels=jnp.asarray(z["y"], jnp.int32), learn_sigma=learn_sigma)
  ref = z["out_sigma" if learn_sigma else "out_nosigma"]
  assert out.shape == ref.shape == (4, 8, 8, 8 if learn_sigma else 4)
  rel = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
  assert rel <= 1e-5, rel
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5)


def test_position_embedding_and_torch_mapping():
  z, sds = _torch_asset()
  np.testing.assert_allclose(get_2d_sincos_pos_embed(32, 4), z["sd/pos_embed"][0], atol=1e-6)
  # Hand values, token (row 1, column 2), D = 8: [sin 2w, cos 2w, sin w', cos w'], w = (1, 1e-2).
  row = get_2d_sincos_pos_embed(8, 3)[1 * 3 + 2]
  w = np.array([1.0, 0.01])
  np.testing.assert_allclose(row, np.concatenate([np.sin(2 * w), np.cos(2 * w), np.sin(w),
                                                  np.cos(w)]), atol=1e-6)
  with pytest.raises(ValueError, match="divisible by 4"):
    get_2d_sincos_pos_embed(30, 4)
  sd = sds[True]
  with pytest.raises(ValueError, match="unknown DiT state_dict key 'ema.decay'"):
    dit_params_from_torch({**sd, "ema.decay": np.ones(())})
  with pytest.raises(ValueError, match="pos_embed"):
    dit_params_from_torch({**sd, "pos_embed": sd["pos_embed"] + 0.1})
  p = dit_params_from_torch(sd)  # layouts: Linear (out, in) -> (in, out), conv OIHW -> HWIO
  np.testing.assert_array_equal(p["blocks_0"]["qkv"]["kernel"], sd["blocks.0.attn.qkv.weight"].T)
  np.testing.assert_array_equal(p["x_embedder"]["kernel"][1, 0, 3],
                                sd["x_embedder.proj.weight"][:, 3, 1, 0])


def _shortcut_asset():
  return np.load(os.path.join(ASSETS, "dit_shortcut_cond.npz"))


def _shortcut_flat(z, theirs: str, ours: str) -> dict:
  """Their TimestepEmbedder_k/Dense_{0,1} -> our <ours>/mlp_{0,2} (the same (in, out) layout)."""
  return {f"{ours}/mlp_{2 * i}/{leaf}": z[f"{theirs}/Dense_{i}/{leaf}"]
          for i in (0, 1) for leaf in ("kernel", "bias")}


def test_second_time_condition_matches_shortcut_models():
  """Shortcut models' DiT: c = TimestepEmbedder_0(t) + LabelEmbedder(y) + TimestepEmbedder_1(dt);
  ours with time_conditions=2: c = t_embedder(c_noise) + y_embedder(y) + t2_embedder(c_noise_2)."""
  z = _shortcut_asset()
  t, dt, y = jnp.asarray(z["t"]), jnp.asarray(z["dt"]), jnp.asarray(z["y"], jnp.int32)
  for theirs, inp, act in (("TimestepEmbedder_0", t, "time_embed"),
                           ("TimestepEmbedder_1", dt, "dt_embed")):
    p = {k.split("/", 1)[1]: v for k, v in _shortcut_flat(z, theirs, "e").items()}
    out = TimestepEmbedder(32).apply({"params": unflatten_params(p)}, inp)
    np.testing.assert_allclose(out, z[f"act/{act}"], rtol=1e-5, atol=1e-5)
  model = DiT(**{**TINY, "depth": 1}, time_conditions=2)
  shapes = _shapes(model, (4, 8, 8, 4), class_labels=y)  # blocks do not touch c: zeros
  flat = {k: np.zeros(v.shape, np.float32) for k, v in flatten_params(shapes).items()}
  flat.update(_shortcut_flat(z, "TimestepEmbedder_0", "t_embedder"))
  flat.update(_shortcut_flat(z, "TimestepEmbedder_1", "t2_embedder"))
  flat["y_embedder/embedding_table"] = z["LabelEmbedder_0/Embed_0/embedding"]  # 10 + null rows
  params = checked_params(flat, {k: v.shape for k, v in flat.items()}, "shortcut", "DiT")
  _, state = jax.jit(lambda p: model.apply({"params": p}, jnp.zeros((4, 8, 8, 4)), t,
                                           class_labels=y, c_noise_2=dt,
                                           mutable=["intermediates"]))(params)
  c = state["intermediates"]["conditioning"][0]
  ref = z["act/conditioning"]
  np.testing.assert_allclose(ref, z["act/time_embed"] + z["act/dt_embed"] + z["act/label_embed"],
                             rtol=1e-5, atol=1e-5)
  assert float(np.linalg.norm(c - ref) / np.linalg.norm(ref)) <= 1e-5


def test_c_noise_2_only_matters_with_two_time_conditions():
  z, _ = _torch_asset()
  x, t, y = jnp.asarray(z["x"]), jnp.asarray(z["t"]), jnp.asarray(z["y"], jnp.int32)
  r1, r2 = jnp.array([0.0, 1.0, 2.0, 3.0]), jnp.array([0.0, 1.0, 5.0, 3.0])
  one = _tiny_params(False)
  a = _apply(one, x, t, class_labels=y)
  np.testing.assert_array_equal(a, _apply(one, x, t, class_labels=y, c_noise_2=r1))  # ignored
  two = _tiny_params(False, time_conditions=2)
  b1 = _apply(two, x, t, class_labels=y, c_noise_2=r1, time_conditions=2)
  b2 = _apply(two, x, t, class_labels=y, c_noise_2=r2, time_conditions=2)
  np.testing.assert_array_equal(b1[np.array([0, 1, 3])], b2[np.array([0, 1, 3])])  # examples are independent
  assert float(jnp.max(jnp.abs(b1[2] - b2[2]))) > 1e-2  # only the changed c_noise_2
  assert float(jnp.max(jnp.abs(b1 - a))) > 1e-2
  # init without c_noise_2 (cmjax.train_state does so) creates t2_embedder; apply needs it.
  model = DiT(**TINY, time_conditions=2)
  assert "t2_embedder" in _shapes(model, (1, 8, 8, 4), class_labels=jnp.zeros((1,), jnp.int32))
  with pytest.raises(ValueError, match="time_conditions=2 needs c_noise_2"):
    model.apply({"params": two}, x, t, class_labels=y)


def test_initialisation_follows_dit():
  model = DiT(**TINY, learn_sigma=True)
  x = jnp.asarray(_torch_asset()[0]["x"])
  out, v = jax.jit(model.init_with_output)(jax.random.key(0), x, jnp.full((4,), 10.0),
                                           class_labels=jnp.array([0, 1, 2, 3]))
  p = v["params"]
  assert out.shape == (4, 8, 8, 8) and not np.any(out)  # adaLN-Zero: the network starts at 0
  for zero in (p["blocks_0"]["adaLN_modulation"], p["final_layer"]["adaLN_modulation"],
               p["final_layer"]["linear"]):
    assert not np.any(zero["kernel"]) and not np.any(zero["bias"])
  qkv = np.asarray(p["blocks_1"]["qkv"]["kernel"])  # xavier (32, 96): bound sqrt(6 / 128)
  bound = np.sqrt(6 / 128)
  assert np.abs(qkv).max() <= bound and abs(qkv.std() - bound / np.sqrt(3)) < 0.05 * bound
  patch = np.asarray(p["x_embedder"]["kernel"])  # (2, 2, 4, 32): xavier on (16, 32)
  bound = np.sqrt(6 / (16 + 32))
  assert patch.shape == (2, 2, 4, 32) and np.abs(patch).max() <= bound
  assert np.abs(patch).max() > 0.9 * bound
  for w in (p["t_embedder"]["mlp_0"]["kernel"], p["t_embedder"]["mlp_2"]["kernel"],
            p["y_embedder"]["embedding_table"]):
    assert abs(float(np.std(w)) - 0.02) < 0.003
  assert p["y_embedder"]["embedding_table"].shape == (11, 32)  # + the null class
  assert not any(np.any(b) for b in (p["blocks_0"]["qkv"]["bias"], p["blocks_0"]["fc1"]["bias"],
                                     p["x_embedder"]["bias"], p["t_embedder"]["mlp_0"]["bias"]))


def test_label_dropout_only_in_training_with_the_null_class():
  z, _ = _torch_asset()
  params = _tiny_params(False)
  x8 = jnp.tile(jnp.asarray(z["x"][:1]), (8, 1, 1, 1))
  t8 = jnp.full((8,), 300.0)
  y8 = jnp.arange(8, dtype=jnp.int32)
  cond = _apply(params, x8, t8, class_labels=y8)
  null = _apply(params, x8, t8)  # None = the null class
  np.testing.assert_array_equal(null, _apply(params, x8, t8, class_labels=jnp.full((8,), 10)))
  assert float(jnp.max(jnp.abs(null[0] - null[1]))) == 0.0
  assert float(jnp.min(jnp.max(jnp.abs(cond - null), axis=(1, 2, 3)))) > 1e-2
  rngs = {"dropout": jax.random.key(3)}
  # Training: each label becomes the null class with probability class_dropout_prob.
  np.testing.assert_allclose(_apply(params, x8, t8, True, rngs, y8, class_dropout_prob=1.0),
                             null, rtol=1e-6, atol=1e-6)
  half = _apply(params, x8, t8, True, rngs, y8, class_dropout_prob=0.5)
  is_null = [bool(np.allclose(half[i], null[i], atol=1e-6)) for i in range(8)]
  is_cond = [bool(np.allclose(half[i], cond[i], atol=1e-6)) for i in range(8)]
  assert all(a != b for a, b in zip(is_null, is_cond)) and 0 < sum(is_null) < 8, is_null
  np.testing.assert_array_equal(half, _apply(params, x8, t8, True, rngs, y8,
                                             class_dropout_prob=0.5))  # the key decides
  # Eval: no dropout, no rng needed.
  np.testing.assert_array_equal(_apply(params, x8, t8, False, None, y8, class_dropout_prob=0.5),
                                cond)
  # No null class without label dropout; unconditional models take no labels.
  no_null = DiT(**{**TINY, "class_dropout_prob": 0.0})
  shapes = _shapes(no_null, (1, 8, 8, 4), class_labels=jnp.zeros((1,), jnp.int32))
  assert shapes["y_embedder"]["embedding_table"].shape == (10, 32)
  with pytest.raises(ValueError, match="needs a null class"):
    _shapes(no_null, (1, 8, 8, 4))
  with pytest.raises(ValueError, match="label_dim=0"):
    _shapes(DiT(**{**TINY, "label_dim": 0}), (1, 8, 8, 4), class_labels=jnp.zeros((1,), int))
  with pytest.raises(ValueError, match=r"class_labels must be \(1,\) ints"):
    _shapes(DiT(**TINY), (1, 8, 8, 4), class_labels=jnp.zeros((1, 10)))


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


def test_bfloat16_params_and_input():
  """Params and x cast to bfloat16 (c_noise float32), as make_model_fn(compute_dtype=bf16):
  patch conv and token matmuls in bfloat16, LayerNorm / softmax statistics in float32."""
  z, _ = _torch_asset()
  params = _tiny_params(True)
  x, t, y = jnp.asarray(z["x"]), jnp.asarray(z["t"]), jnp.asarray(z["y"], jnp.int32)
  ref = _apply(params, x, t, class_labels=y, learn_sigma=True)
  p16 = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  out = _apply(p16, x.astype(jnp.bfloat16), t, class_labels=y, learn_sigma=True)
  assert out.dtype == jnp.bfloat16 and out.shape == ref.shape
  out = np.asarray(out.astype(jnp.float32))
  assert np.all(np.isfinite(out))
  rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
  assert 1e-4 < rel < 5e-2, rel  # > 1e-4: it really ran in bfloat16
  model = DiT(**TINY, learn_sigma=True)
  ops = _ops(jax.make_jaxpr(lambda p, xx: model.apply({"params": p}, xx, t, class_labels=y))(
      p16, x.astype(jnp.bfloat16)).jaxpr)
  bf16 = (("bfloat16", "bfloat16"), "bfloat16")
  assert set(ops["conv_general_dilated"]) == {bf16}
  # qkv, proj, fc1, fc2 per block, the final linear and attention's p @ v: bfloat16.
  assert ops["dot_general"].count(bf16) == 5 * TINY["depth"] + 1
  # Attention logits: bfloat16 q, k with a float32 result; softmax and LayerNorm reductions f32.
  assert ops["dot_general"].count((("bfloat16", "bfloat16"), "float32")) == TINY["depth"]
  assert {d for k in ("exp", "reduce_sum", "reduce_max", "rsqrt") for _, d in ops[k]} == {"float32"}


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_patch_sizes(patch):
  """Shapes for p = 1, 2, 4, 8 at 16x16x3 (nothing allocated); for p = 4 the unpatchify layout in
  numbers: with all weights zero the output is the final linear's bias, (p, q, c) per token, so
  pixel (i, j) gets bias[(i % p, j % p, :)] (the parity test checks p = 2 against DiT)."""
  model = DiT(input_size=16, patch_size=patch, in_channels=3, hidden_size=32, depth=1,
              num_heads=2, learn_sigma=True)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
  shapes = _shapes(model, (2, 16, 16, 3))
  assert shapes["x_embedder"]["kernel"].shape == (patch, patch, 3, 32)
  assert shapes["final_layer"]["linear"]["kernel"].shape == (32, patch * patch * 6)
  out = jax.eval_shape(lambda: model.init_with_output(jax.random.key(0), x, jnp.ones((2,)))[0])
  assert out.shape == (2, 16, 16, 6)
  if patch == 4:  # a numerical check of the layouts: output bias = (p, q, c) pixel pattern
    p = jax.tree.map(jnp.zeros_like, model.init(jax.random.key(0), x, jnp.ones((2,)))["params"])
    bias = np.arange(patch * patch * 6, dtype=np.float32)
    p["final_layer"]["linear"]["bias"] = jnp.asarray(bias)
    out = model.apply({"params": p}, x, jnp.ones((2,)))
    want = np.tile(bias.reshape(patch, patch, 6), (4, 4, 1))  # pixel (i, j) -> (i % p, j % p)
    np.testing.assert_array_equal(out[1], want)


def test_bad_inputs_raise_one_line_errors():
  x = jnp.zeros((1, 8, 8, 4))
  for kw, msg in ((dict(num_heads=3), "num_heads 3 must divide"),
                  (dict(patch_size=3), "multiple of patch_size"),
                  (dict(time_conditions=3), "time_conditions must be 1 or 2"),
                  (dict(class_dropout_prob=1.5), "class_dropout_prob"),
                  (dict(in_channels=3), r"x must be \(B, 8, 8, 3\)")):
    with pytest.raises(ValueError, match=msg):
      _shapes(DiT(**{**TINY, "label_dim": 0, **kw}), x.shape)
  with pytest.raises(ValueError, match="augment_labels"):
    DiT(**{**TINY, "label_dim": 0}).init(jax.random.key(0), x, jnp.zeros((1,)),
                                         augment_labels=jnp.zeros((1, 9)))


def test_jit_with_the_batch_sharded_over_8_devices():
  """Batch split over the 'data' mesh (params replicated, then FSDP-split): same numbers as one
  device, output sharded like the batch."""
  assert jax.device_count() == 8
  mesh = parallel.make_data_mesh()
  params = _tiny_params(False)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((8, 8, 8, 4)).astype(np.float32))
  t = jnp.asarray(rng.uniform(0, 999, 8).astype(np.float32))
  y = jnp.asarray(rng.integers(0, 11, 8).astype(np.int32))
  ref = _apply(params, x, t, class_labels=y)
  model = DiT(**TINY)
  fn = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, class_labels=y))
  batch = parallel.batch_sharding(mesh)
  xs, ts, ys = (jax.device_put(a, batch) for a in (x, t, y))
  for layout in (parallel.replicated(mesh),
                 parallel.fsdp_sharding(jax.eval_shape(lambda: params), mesh, min_size=256)):
    ps = jax.device_put(params, layout)
    out = fn(ps, xs, ts, ys)
    assert out.sharding.is_equivalent_to(batch, out.ndim)
    assert len(out.addressable_shards) == 8 and out.addressable_shards[0].data.shape[0] == 1
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
  split = [a for a in jax.tree.leaves(ps) if not a.sharding.is_fully_replicated]
  assert len(split) >= 4  # FSDP really split some kernels


def test_chosen_by_name_in_the_config():
  """config.model.name = 'dit' builds DiT from config.model (cmjax.models discovers BACKBONES)."""
  from cmjax.models import MODELS, build_model, model_config

  assert MODELS["dit"] is DiT
  cfg = model_config("dit", **dit_config("XL/2", label_dim=1000, learn_sigma=True))
  m = build_model(cfg)
  assert isinstance(m, DiT) and m.depth == 28 and m.time_conditions == 1
  assert _count(_shapes(m, class_labels=jnp.zeros((1,), jnp.int32))) == 674_834_720
