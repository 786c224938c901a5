"""openai/consistency_models `.pt` state dicts (guided-diffusion `UNetModel`) -> cmjax ADMUNet.

The block-by-block correspondence is in `cmjax.weights.openai_cm`'s docstring (the public names
are importable from there). Here: the README flags of the released networks, the state-dict
reader (no torch), the name / layout map and `torch_to_cmjax`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.errors import WeightsFileError

# The README's ImageNet-64 flags (scripts/launch.sh): --attention_resolutions 32,16,8
# --class_cond True --use_scale_shift_norm True --num_channels 192 --num_head_channels 64
# --num_res_blocks 3 --resblock_updown True --image_size 64 (channel_mult from create_model).
IMAGENET64_FLAGS = dict(image_size=64, in_channels=3, num_channels=192, num_res_blocks=3,
                        channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8),
                        num_head_channels=64, num_heads=1, use_scale_shift_norm=True,
                        resblock_updown=True, learn_sigma=False, class_cond=None, dropout=0.0)
# The LSUN-256 flags (bedroom and cat: edm_*256_ema, cd_*256_{l2,lpips}, ct_*256; scripts/
# launch.sh): --attention_resolutions 32,16,8 --class_cond False --use_scale_shift_norm False
# --num_channels 256 --num_head_channels 64 --num_res_blocks 2 --resblock_updown True
# --image_size 256 (channel_mult (1, 1, 2, 2, 4, 4) from create_model).
LSUN256_FLAGS = dict(IMAGENET64_FLAGS, image_size=256, num_channels=256, num_res_blocks=2,
                     channel_mult=(1, 1, 2, 2, 4, 4), use_scale_shift_norm=False)
RELEASED_FLAGS = {"imagenet64": IMAGENET64_FLAGS, "lsun256": LSUN256_FLAGS}
# create_model's channel_mult for channel_mult="" by image size.
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4),
                        128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


def read_openai_torch(path: str) -> dict:
  """A consistency_models `.pt` file -> {state-dict name: numpy array (torch layout)}."""
  from cmjax.weights.safe_pickle import load_torch_file

  sd = load_torch_file(path)
  if not isinstance(sd, dict) or not sd:
    raise WeightsFileError(f"{path}: not a state dict (a {type(sd).__name__})")
  bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, np.ndarray)]
  if bad:
    raise WeightsFileError(f"{path}: state-dict entry {bad[0]!r} is not a named tensor")
  return dict(sd)


def released_flags(tensors: dict) -> dict:
  """The README flags of the released network a state dict is: `LSUN256_FLAGS` when it has no
  label embedding and a 256-channel input conv (input_blocks.0.0.weight (256, 3, 3, 3); the
  bedroom and cat files), else `IMAGENET64_FLAGS` (the default)."""
  conv = tensors.get("input_blocks.0.0.weight")
  if "label_emb.weight" not in tensors and conv is not None and np.shape(conv)[0] == 256:
    return LSUN256_FLAGS
  return IMAGENET64_FLAGS


def _arch(path: str, tensors: dict, overrides: dict) -> dict:
  """`released_flags(tensors)` with `overrides`, normalised (tuples, resolutions as ints,
  class_cond)."""
  unknown = sorted(set(overrides) - set(IMAGENET64_FLAGS) - {"channel_mult"})
  if unknown:
    raise WeightsFileError(f"unknown consistency_models flag(s) {unknown}; known: "
                           f"{sorted(IMAGENET64_FLAGS)}")
  base = released_flags(tensors)
  a = {**base, **overrides}
  if "channel_mult" not in overrides and a["image_size"] != base["image_size"]:
    a["channel_mult"] = DEFAULT_CHANNEL_MULT.get(int(a["image_size"]))
    if a["channel_mult"] is None:
      raise WeightsFileError(f"image_size {a['image_size']} has no default channel_mult; pass "
                             f"channel_mult")
  for k in ("channel_mult", "attention_resolutions"):
    v = a[k]
    a[k] = tuple(int(s) if float(s) == int(float(s)) else float(s)
                 for s in (v.split(",") if isinstance(v, str) else v))
  if a["class_cond"] is None:
    a["class_cond"] = "label_emb.weight" in tensors
  if not a["resblock_updown"]:
    raise WeightsFileError(f"{path}: resblock_updown=False (conv / average-pool resampling "
                           f"layers) has no cmjax ADMUNet equivalent")
  if any(not float(m).is_integer() for m in a["channel_mult"]):
    raise WeightsFileError(f"{path}: fractional channel_mult {a['channel_mult']} has no cmjax "
                           f"ADMUNet equivalent")
  return a


def _heads(a: dict, channels: int) -> int:
  """Attention heads of a C-channel AttentionBlock (cm/unet.py AttentionBlock)."""
  if a["num_head_channels"] == -1:
    return int(a["num_heads"])
  return channels // int(a["num_head_channels"])


def _layout(a: dict) -> list:
  """[(torch module prefix, cmjax module path, kind, channels)] of UNetModel in cm/unet.py
  order; kind in 'res' | 'attn' | 'conv' | 'linear' | 'norm' | 'embedding'."""
  mc, mult, nrb, size = a["num_channels"], a["channel_mult"], a["num_res_blocks"], a["image_size"]
  attn = set(a["attention_resolutions"])
  out = [("time_embed.0", "map_layer0", "linear", 0), ("time_embed.2", "map_layer1", "linear", 0)]
  if a["class_cond"]:
    out.append(("label_emb", "map_label", "embedding", 0))
  r0 = size
  out.append(("input_blocks.0.0", f"enc_{r0}x{r0}_conv", "conv", 0))
  idx, last = 1, len(mult) - 1
  for level, m in enumerate(mult):
    res = size >> level
    for i in range(nrb):
      out.append((f"input_blocks.{idx}.0", f"enc_{res}x{res}_block{i}", "res", 0))
      if res in attn:
        out.append((f"input_blocks.{idx}.1", f"enc_{res}x{res}_block{i}", "attn", mc * m))
      idx += 1
    if level != last:
      r = res >> 1
      out.append((f"input_blocks.{idx}.0", f"enc_{r}x{r}_down", "res", 0))
      idx += 1
  low = size >> last
  out += [("middle_block.0", f"dec_{low}x{low}_in0", "res", 0),
          ("middle_block.1", f"dec_{low}x{low}_in0", "attn", mc * mult[last]),
          ("middle_block.2", f"dec_{low}x{low}_in1", "res", 0)]
  idx = 0
  for level in reversed(range(last + 1)):
    res = size >> level
    for i in range(nrb + 1):
      out.append((f"output_blocks.{idx}.0", f"dec_{res}x{res}_block{i}", "res", 0))
      j = 1
      if res in attn:
        out.append((f"output_blocks.{idx}.1", f"dec_{res}x{res}_block{i}", "attn",
                    mc * mult[level]))
        j = 2
      if level and i == nrb:
        r = res * 2
        out.append((f"output_blocks.{idx}.{j}", f"dec_{r}x{r}_up", "res", 0))
      idx += 1
  out += [("out.0", "out_norm", "norm", 0), ("out.2", "out_conv", "conv", 0)]
  return out


_RES = (("in_layers.0", "norm0", "norm"), ("in_layers.2", "conv0", "conv"),
        ("emb_layers.1", "affine", "linear"), ("out_layers.0", "norm1", "norm"),
        ("out_layers.3", "conv1", "conv"), ("skip_connection", "skip", "conv"))
_ATTN = (("norm", "norm2", "norm"), ("qkv", "qkv", "qkv"), ("proj_out", "proj", "conv"))


def _name_map(a: dict) -> dict:
  """torch state-dict name -> (cmjax 'a/b/leaf', kind, heads)."""
  out = {}
  for tprefix, cpath, kind, channels in _layout(a):
    if kind == "res":
      subs = [(f"{tprefix}.{t}", f"{cpath}/{c}", k, 0) for t, c, k in _RES]
    elif kind == "attn":
      subs = [(f"{tprefix}.{t}", f"{cpath}/{c}", k, _heads(a, channels)) for t, c, k in _ATTN]
    else:
      subs = [(tprefix, cpath, kind, 0)]
    for t, c, k, heads in subs:
      if k == "embedding":
        out[f"{t}.weight"] = (f"{c}/kernel", k, 0)
        continue
      out[f"{t}.weight"] = (f"{c}/{'scale' if k == 'norm' else 'kernel'}", k, heads)
      out[f"{t}.bias"] = (f"{c}/bias", k, heads)
  return out


def _qkv_to_cmjax(a: np.ndarray, heads: int) -> np.ndarray:
  """CM's qkv output channels (qkv, head, d) -> cmjax/EDM's (head, d, qkv), along axis 0."""
  three_c = a.shape[0]
  d = three_c // 3 // heads
  return a.reshape(3, heads, d, *a.shape[1:]).transpose(1, 2, 0, *range(3, a.ndim + 2)).reshape(
      a.shape)


def _to_flax(kind: str, leaf: str, a: np.ndarray, heads: int) -> np.ndarray:
  """One torch array -> flax layout (float32): Linear (out, in) -> (in, out), Conv2d
  (O, I, kh, kw) -> (kh, kw, I, O), qkv permuted, Embedding (N, E) kept."""
  a = np.asarray(a, np.float32)
  if kind == "qkv":
    a = _qkv_to_cmjax(a, heads)
  if leaf == "kernel" and kind == "linear" and a.ndim == 2:
    return a.T
  if leaf == "kernel" and kind in ("conv", "qkv") and a.ndim == 4:
    return a.transpose(2, 3, 1, 0)
  return a


def _torch_shape(kind: str, shape: tuple) -> tuple:
  """A flax leaf shape in torch layout (for error messages)."""
  if kind == "linear" and len(shape) == 2:
    return (shape[1], shape[0])
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape)


def _adm_kwargs(path: str, a: dict, label_dim: int) -> dict:
  """config.model kwargs (with name 'adm') of the flags `a`; adaptive_scale=False only for
  use_scale_shift_norm=False (one line when ADMUNet has no such field)."""
  from cmjax.models import model_fields

  kw = dict(name="adm", out_channels=0 if not a["learn_sigma"] else 2 * a["in_channels"],
            label_dim=label_dim, augment_dim=0, model_channels=int(a["num_channels"]),
            channel_mult=tuple(int(m) for m in a["channel_mult"]), channel_mult_emb=4,
            num_blocks=int(a["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in a["attention_resolutions"]),
            dropout=float(a["dropout"]), label_dropout=0.0)
  if not a["use_scale_shift_norm"]:
    if "adaptive_scale" not in model_fields("adm"):
      raise WeightsFileError(f"{path}: use_scale_shift_norm=False (the timestep embedding added "
                             f"before the second GroupNorm) needs cmjax adm's 'adaptive_scale' "
                             f"field")
    kw["adaptive_scale"] = False
  return kw


def _channels_per_head(path: str, a: dict):
  """None when every AttentionBlock of the flags has cmjax adm's width per head
  (`adm_unet.CHANNELS_PER_HEAD`, 64), else that other width (one-line error when the blocks
  disagree, or when ADMUNet has no 'channels_per_head' field to take it)."""
  from cmjax.models import adm_unet, model_fields

  widths = {c for _, _, k, c in _layout(a) if k == "attn"}
  if any(_heads(a, c) < 1 or c % _heads(a, c) for c in widths):
    raise WeightsFileError(f"{path}: num_heads={a['num_heads']} / num_head_channels="
                           f"{a['num_head_channels']} do not divide the attention widths "
                           f"{sorted(widths)}")
  per_head = {c // _heads(a, c) for c in widths}
  if not per_head or per_head == {adm_unet.CHANNELS_PER_HEAD}:
    return None
  if len(per_head) != 1:
    raise WeightsFileError(f"{path}: num_heads={a['num_heads']} gives {sorted(per_head)} "
                           f"channels per head in different blocks; cmjax adm has one width")
  if "channels_per_head" not in model_fields("adm"):
    raise WeightsFileError(f"cmjax adm has no 'channels_per_head' field, so it cannot express "
                           f"{min(per_head)} channels per attention head (it has "
                           f"{adm_unet.CHANNELS_PER_HEAD})")
  return int(per_head.pop())


def expected_shapes(kwargs: dict, size: int, cin: int) -> dict:
  """'a/b/leaf' -> shape of cmjax's params for `kwargs` (jax.eval_shape, nothing allocated)."""
  from cmjax.models import MODELS
  from cmjax.param_files import flatten_params

  kw = {k: v for k, v in kwargs.items() if k not in ("name", "norm_groups")}
  model = MODELS[kwargs["name"]](**kw)
  x, c = jnp.zeros((1, size, size, cin)), jnp.zeros((1,))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, c))["params"]
  return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


def torch_to_cmjax(path: str, tensors: dict, **arch) -> tuple[dict, dict, dict]:
  """A consistency_models state dict -> (config.model kwargs for cmjax 'adm', params, flags).

  Args:
    path: the file (for messages).
    tensors: state-dict name -> numpy array, as `read_openai_torch` returns.
    **arch: the README flags the file was trained with (image_size, num_channels,
      num_res_blocks, channel_mult, attention_resolutions (resolutions, as the flag:
      "32,16,8" or (32, 16, 8)), num_head_channels, num_heads, use_scale_shift_norm,
      resblock_updown, learn_sigma, class_cond (None: from the file), in_channels, dropout);
      defaults: the released flags the file's tensors show (`released_flags`: LSUN-256 or
      ImageNet-64); channel_mult defaults to create_model's for another image_size.
  Raises WeightsFileError, one line: an unsupported flag, or the first tensor (in file order)
  that has no place in or does not fit the network the flags describe (expected and found
  shapes, torch layout), or the first missing one.
  """
  a = _arch(path, tensors, arch)
  names = _name_map(a)
  label = tensors.get("label_emb.weight")
  label_dim = 0 if not a["class_cond"] else (
      int(label.shape[0]) if label is not None and label.ndim == 2 else 1000)
  kwargs = _adm_kwargs(path, a, label_dim)
  per_head = _channels_per_head(path, a)
  if per_head is not None:
    kwargs["channels_per_head"] = per_head
  expected = expected_shapes(kwargs, int(a["image_size"]), int(a["in_channels"]))
  flat, widths = {}, set()
  for name, arr in tensors.items():
    if name not in names:
      raise WeightsFileError(f"{path}: parameter '{name}' {tuple(arr.shape)} has no place in "
                             f"cmjax adm for these flags (e.g. another num_res_blocks, "
                             f"channel_mult, attention_resolutions or class_cond)")
    key, kind, heads = names[name]
    want = expected.get(key)
    if want is None:
      raise WeightsFileError(f"{path}: parameter '{name}' {tuple(arr.shape)} has no place in "
                             f"cmjax adm (no '{key}')")
    if tuple(arr.shape) != _torch_shape(kind, want):
      raise WeightsFileError(f"{path}: parameter '{name}' does not fit cmjax adm: expected "
                             f"{_torch_shape(kind, want)}, found {tuple(arr.shape)}")
    if kind == "norm":
      widths.add(int(arr.shape[0]))
    flat[key] = _to_flax(kind, key.rsplit("/", 1)[1], arr, heads)
  torch_name = {v[0]: (k, v[1]) for k, v in names.items()}
  missing = [k for k in expected if k not in flat]
  if missing:
    name, kind = torch_name.get(missing[0], (missing[0], ""))
    raise WeightsFileError(f"{path}: the file lacks parameter '{name}' "
                           f"{_torch_shape(kind, expected[missing[0]])}")
  if any(w % 32 for w in widths):
    raise WeightsFileError(f"{path}: a GroupNorm32 over {min(w for w in widths if w % 32)} "
                           f"channels (not a multiple of 32)")
  if min(widths) < 128:  # guided-diffusion: 32 groups; cmjax: min(32, C // 4) groups
    kwargs["norm_groups"] = 32
  from cmjax.param_files import unflatten_params
  return kwargs, unflatten_params(flat), a
