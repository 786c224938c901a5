"""OpenAI's released consistency models -> cmjax backbones, parameter trees and preconditioners.

Two code bases (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", ICML):

1. github.com/openai/consistency_models (PyTorch; ImageNet-64, LSUN-256): `.pt` files are plain
   `torch.save(model.state_dict())` of guided-diffusion's `UNetModel` (`cm/unet.py`, built by
   `cm/script_util.py create_model` from the README flags). They are read with
   `cmjax.weights.safe_pickle.load_torch_file` (no torch, nothing executed) and mapped onto
   cmjax's ADM (`cmjax.models.adm_unet.ADMUNet`, EDM's DhariwalUNet, itself a port of the same
   network). Block by block (cm/unet.py, cm/nn.py vs EDM's DhariwalUNet):
     * time embedding: `timestep_embedding(t, model_channels)` = [cos, sin](t 10000^(-i/half)),
       = cmjax `positional_embedding(endpoint=False)`; then Linear-SiLU-Linear (time_embed.0/.2 =
       map_layer0/1), emb width 4 model_channels. Identical. The time input differs: CM feeds
       t = 1000 * 0.25 * log(sigma + 1e-44) (`karras_diffusion.py KarrasDenoiser.denoise`), EDM
       0.25 log(sigma): `OpenAICMPreconditioner` feeds the CM value.
     * label embedding: nn.Embedding(num_classes, emb) added after time_embed = EDM's bias-free
       map_label on a one-hot label (kernel (N, E) = the Embedding weight as stored). Identical.
     * ResBlock (use_scale_shift_norm=True, resblock_updown=True): GroupNorm-SiLU-[avg-pool 2x2 |
       nearest x2]-conv3x3, emb_layers SiLU-Linear to [scale, shift], norm * (1 + scale) + shift,
       SiLU-dropout-conv3x3, skip Identity or 1x1 conv, skip scale 1 = EDM's UNetBlock with
       adaptive_scale, box filter [1, 1] resampling, resample_proj=False. Identical.
     * AttentionBlock: x + proj_out(attn(qkv(norm(x)))), softmax(q k^T / sqrt(d)), heads =
       C // num_head_channels (the flash path `QKVFlashAttention`, which the released models
       use: UNetModel never passes attention_type). Identical math; the qkv output channels are
       laid out (qkv, head, d) in CM ("b (three h d) s") but (head, d, qkv) in EDM/cmjax, so the
       qkv weight and bias are permuted (`_qkv_to_cmjax`).
     * GroupNorm: CM's GroupNorm32 has 32 groups on every width, EDM/cmjax min(32, C // 4): the
       same for C >= 128 (every GroupNorm of the released ImageNet-64 and LSUN-256 networks, whose
       narrowest width is 192 / 256); a file with a narrower GroupNorm gets
       model_kwargs['norm_groups'] = 32, which needs that ADMUNet field (`make_model` refuses
       otherwise). eps 1e-5 in both.
     * attention heads: cmjax ADMUNet has 64 channels per head (CM's num_head_channels 64, the
       released flags); another width is returned as model_kwargs['channels_per_head'].
     * output GroupNorm-SiLU-conv3x3, decoder concat [h, skip], skip order: identical.
   Not covered (a one-line error): use_scale_shift_norm=False (LSUN-256's flags: the embedding
   is added before norm1, `h + emb` instead of scale-shift; ADMUNet has no such option),
   resblock_updown=False (conv/average-pool resampling layers), num_heads without
   num_head_channels where it gives other head counts in different blocks.
   Preconditioning (`karras_diffusion.py get_scalings_for_boundary_condition`, used when the
   training mode is consistency_*): c_skip = sd^2 / ((s - sigma_min)^2 + sd^2), c_out =
   (s - sigma_min) sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2) = cmjax's
   ConsistencyPreconditioner; the EDM teachers (edm_imagenet64_ema.pt) use `get_scalings`
   (EDM's Table 1) = EDMPreconditioner; both with CM's c_noise above.

2. github.com/openai/consistency_models_cifar10 (JAX/Flax; CIFAR-10): checkpoints are
   `flax.serialization.to_bytes(State)` msgpack files, read with `msgpack_restore` (data only),
   holding score_sde's NCSN++ (`jcm/models/ncsnpp.py`, configs/cifar10_ve_cd.py), which EDM's
   SongUNet NCSN++ reproduces block for block; the names map onto cmjax's SongUNet
   (`flax_to_cmjax`), the file's GaussianFourierProjection W becomes
   model_kwargs['fourier_freqs'], and their c_noise 0.25 log(t) is cmjax's
   (ConsistencyPreconditioner / EDMPreconditioner as they are).

`load_openai_cm(path, **arch)` -> `ImportedNetwork` (model_kwargs for config.model, params,
preconditioner), as `cmjax.weights.edm_pickle.load_edm_network`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.errors import WeightsFileError
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner

# The README's ImageNet-64 flags (scripts/launch.sh): --attention_resolutions 32,16,8
# --class_cond True --use_scale_shift_norm True --num_channels 192 --num_head_channels 64
# --num_res_blocks 3 --resblock_updown True --image_size 64 (channel_mult from create_model).
IMAGENET64_FLAGS = dict(image_size=64, in_channels=3, num_channels=192, num_res_blocks=3,
                        channel_mult=(1, 2, 3, 4), attention_resolutions=(32, 16, 8),
                        num_head_channels=64, num_heads=1, use_scale_shift_norm=True,
                        resblock_updown=True, learn_sigma=False, class_cond=None, dropout=0.0)
# create_model's channel_mult for channel_mult="" by image size.
DEFAULT_CHANNEL_MULT = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4),
                        128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}


# ---------------------------------------------------------------------------------------------
# Preconditioning.

@dataclasses.dataclass(frozen=True)
class OpenAICMPreconditioner(ConsistencyPreconditioner):
  """CM's consistency function (openai/consistency_models `KarrasDenoiser.denoise` with
  distillation=True): f(x, s) = c_skip x + c_out F(c_in x, c_noise), CM Appendix C:
  c_skip = sd^2 / ((s - sigma_min)^2 + sd^2), c_out = (s - sigma_min) sd / sqrt(s^2 + sd^2),
  c_in = 1 / sqrt(s^2 + sd^2), and c_noise = 1000 * 0.25 * log(s + 1e-44) (CM's time input;
  cmjax's ConsistencyPreconditioner feeds 0.25 log(s)). x (B, H, W, C), s (B,)."""
  c_noise_scale: float = 250.0

  def coefficients(self, t):
    """(c_skip, c_out, c_in, c_noise), each shaped like t."""
    c_skip, c_out, c_in, _ = super().coefficients(t)
    return c_skip, c_out, c_in, self.c_noise_scale * jnp.log(t + 1e-44)


@dataclasses.dataclass(frozen=True)
class OpenAIEDMPreconditioner(EDMPreconditioner):
  """CM's EDM denoiser (`KarrasDenoiser.denoise` with distillation=False, the teachers
  edm_imagenet64_ema.pt / edm_bedroom256_ema.pt): EDM Table 1 scalings D(x; s) = c_skip x +
  c_out F(c_in x, c_noise) with c_noise = 1000 * 0.25 * log(s + 1e-44). x (B, H, W, C), s (B,)."""
  c_noise_scale: float = 250.0

  def coefficients(self, s):
    """(c_skip, c_out, c_in, c_noise), each shaped like s."""
    c_skip, c_out, c_in, _ = super().coefficients(s)
    return c_skip, c_out, c_in, self.c_noise_scale * jnp.log(s + 1e-44)


def cm_preconditioner(boundary: bool = True, sigma_data: float = 0.5, sigma_min: float = 0.002):
  """The preconditioner CM's code wraps a file's network in: boundary=True for consistency
  models (cd_*/ct_* files: `--training_mode consistency_*`), False for the EDM teachers."""
  if boundary:
    return OpenAICMPreconditioner(sigma_data, sigma_min)
  return OpenAIEDMPreconditioner(sigma_data)


# ---------------------------------------------------------------------------------------------
# openai/consistency_models (PyTorch) state dicts -> cmjax ADMUNet.

@dataclasses.dataclass
class OpenAICheckpoint:
  """What an OpenAI CM file holds: path, format ('torch' | 'flax'), the architecture used
  (flags / config after defaults), and name -> numpy array as stored (torch or flax layout)."""
  path: str
  format: str
  arch: dict
  tensors: dict


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


def _arch(path: str, tensors: dict, overrides: dict) -> dict:
  """IMAGENET64_FLAGS with `overrides`, normalised (tuples, resolutions as ints, class_cond)."""
  unknown = sorted(set(overrides) - set(IMAGENET64_FLAGS) - {"channel_mult"})
  if unknown:
    raise WeightsFileError(f"unknown consistency_models flag(s) {unknown}; known: "
                           f"{sorted(IMAGENET64_FLAGS)}")
  a = {**IMAGENET64_FLAGS, **overrides}
  if "channel_mult" not in overrides and a["image_size"] != 64:
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
  if not a["use_scale_shift_norm"]:
    raise WeightsFileError(f"{path}: use_scale_shift_norm=False (the timestep embedding added "
                           f"before the second GroupNorm, LSUN-256's flags) has no cmjax ADMUNet "
                           f"equivalent (it only has scale-shift conditioning)")
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


def _adm_kwargs(a: dict, label_dim: int) -> dict:
  """config.model kwargs (with name 'adm') of the flags `a`."""
  return dict(name="adm", out_channels=0 if not a["learn_sigma"] else 2 * a["in_channels"],
              label_dim=label_dim, augment_dim=0, model_channels=int(a["num_channels"]),
              channel_mult=tuple(int(m) for m in a["channel_mult"]), channel_mult_emb=4,
              num_blocks=int(a["num_res_blocks"]),
              attn_resolutions=tuple(int(r) for r in a["attention_resolutions"]),
              dropout=float(a["dropout"]), label_dropout=0.0)


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


def _expected_shapes(kwargs: dict, size: int, cin: int) -> dict:
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
      defaults: the ImageNet-64 flags (`IMAGENET64_FLAGS`).
  Raises WeightsFileError, one line: an unsupported flag, or the first tensor (in file order)
  that has no place in or does not fit the network the flags describe (expected and found
  shapes, torch layout), or the first missing one.
  """
  a = _arch(path, tensors, arch)
  names = _name_map(a)
  label = tensors.get("label_emb.weight")
  label_dim = 0 if not a["class_cond"] else (
      int(label.shape[0]) if label is not None and label.ndim == 2 else 1000)
  kwargs = _adm_kwargs(a, label_dim)
  per_head = _channels_per_head(path, a)
  if per_head is not None:
    kwargs["channels_per_head"] = per_head
  expected = _expected_shapes(kwargs, int(a["image_size"]), int(a["in_channels"]))
  flat, widths = {}, set()
  for name, arr in tensors.items():
    if name not in names:
      raise WeightsFileError(f"{path}: parameter '{name}' {tuple(arr.shape)} has no place in "
                             f"cmjax adm for these flags (e.g. another use_scale_shift_norm, "
                             f"resblock_updown or num_res_blocks)")
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


def make_model(model_kwargs: dict):
  """The cmjax backbone for `torch_to_cmjax` / `flax_to_cmjax` kwargs; one line when cmjax's
  network has no field for a rule the file needs (norm_groups, channels_per_head,
  fourier_freqs)."""
  from cmjax.models import MODELS, model_fields

  name = model_kwargs["name"]
  extra = sorted(set(model_kwargs) - {"name"} - set(model_fields(name)))
  why = {"norm_groups": "guided-diffusion's GroupNorm32 (32 groups) on fewer than 128 channels, "
                        "where cmjax uses min(32, C // 4)",
         "channels_per_head": f"{model_kwargs.get('channels_per_head')} channels per attention "
                              f"head",
         "fourier_freqs": "the file's NCSN++ Fourier frequencies"}
  if extra:
    raise WeightsFileError(f"cmjax {name} has no '{extra[0]}' field, so it cannot express "
                           f"{why.get(extra[0], extra[0])}")
  return MODELS[name](**{k: v for k, v in model_kwargs.items() if k != "name"})


def load_openai_cm(path: str, boundary: bool = True, sigma_data: float = 0.5,
                   sigma_min: float = 0.002, **arch):
  """A released OpenAI consistency model (or EDM teacher) -> `ImportedNetwork`.

  `.pt` (openai/consistency_models): `**arch` are the README flags (`torch_to_cmjax`);
  boundary=True for cd_*/ct_* files, False for edm_*_ema.pt teachers. A flax msgpack
  checkpoint (openai/consistency_models_cifar10) goes to `load_openai_cm10` (`**arch` are then
  its model config fields and `entry`). D or f of the file's
  network is then `net.precond(lambda x_in, c_noise: make_model(net.model_kwargs).apply(
  {'params': net.params}, x_in, c_noise, class_labels=labels), x (B, H, W, C), sigma (B,))`,
  x in [-1, 1] NHWC.
  """
  from cmjax.weights.edm_pickle import ImportedNetwork

  if _is_msgpack(path):
    return load_openai_cm10(path, boundary=boundary, sigma_data=sigma_data, sigma_min=sigma_min,
                            **arch)
  tensors = read_openai_torch(path)
  kwargs, params, a = torch_to_cmjax(path, tensors, **arch)
  read = OpenAICheckpoint(path, "torch", a, tensors)
  return ImportedNetwork(kwargs, params, cm_preconditioner(boundary, sigma_data, sigma_min), read)


def _is_msgpack(path: str) -> bool:
  """True for a flax msgpack file (not a zip / legacy torch file)."""
  try:
    with open(path, "rb") as f:
      head = f.read(8)
  except OSError as e:
    raise WeightsFileError(f"cannot read {path}: {e.strerror or e}") from None
  return bool(head) and head[:4] != b"PK\x03\x04" and head[:2] != b"\x80\x02" and (
      0x80 <= head[0] <= 0x8f or head[0] in (0xde, 0xdf))


# ---------------------------------------------------------------------------------------------
# openai/consistency_models_cifar10 (JAX/Flax) msgpack checkpoints -> cmjax SongUNet (NCSN++).

# configs/cifar10_ve_cd.py's model section (also cifar10_ve_ct_*.py, cifar10_k_ve.py).
CIFAR10_CONFIG = dict(image_size=32, num_channels=3, nf=128, ch_mult=(2, 2, 2), num_res_blocks=4,
                      attn_resolutions=(16,), dropout=0.0, resamp_with_conv=True,
                      conditional=True, fir=True, fir_kernel=(1, 3, 3, 1), skip_rescale=True,
                      resblock_type="biggan", progressive="none", progressive_input="residual",
                      progressive_combine="sum", embedding_type="fourier", fourier_scale=16.0,
                      normalization="GroupNorm", nonlinearity="swish", double_heads=False,
                      init_scale=0.0, conv_size=3, name="ncsnpp")
# The settings EDM's SongUNet (encoder 'residual', standard decoder) reproduces.
_CIFAR10_FIXED = dict(resamp_with_conv=True, conditional=True, fir=True, skip_rescale=True,
                      resblock_type="biggan", progressive="none", progressive_input="residual",
                      progressive_combine="sum", embedding_type="fourier",
                      normalization="GroupNorm", nonlinearity="swish", double_heads=False,
                      conv_size=3, name="ncsnpp")
ENTRIES = ("params_ema", "params", "target_params")


def read_openai_msgpack(path: str) -> dict:
  """A flax msgpack checkpoint (`flax.serialization.to_bytes(state)`) -> its state dict (nested
  dicts of numpy arrays). `msgpack_restore` decodes data only; nothing from the file runs."""
  from flax import serialization

  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise WeightsFileError(f"cannot read {path}: {e.strerror or e}") from None
  try:
    state = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types on corrupt input
    raise WeightsFileError(f"{path}: truncated or corrupt msgpack ({type(e).__name__})") from None
  if not isinstance(state, dict):
    raise WeightsFileError(f"{path}: not a flax state (a {type(state).__name__})")
  return state


def _config10(path: str, overrides: dict) -> dict:
  """CIFAR10_CONFIG with `overrides`, refusing settings EDM's SongUNet does not reproduce."""
  unknown = sorted(set(overrides) - set(CIFAR10_CONFIG))
  if unknown:
    raise WeightsFileError(f"unknown consistency_models_cifar10 model field(s) {unknown}; known: "
                           f"{sorted(CIFAR10_CONFIG)}")
  c = {**CIFAR10_CONFIG, **overrides}
  for k in ("ch_mult", "attn_resolutions", "fir_kernel"):
    c[k] = tuple(int(v) for v in c[k])
  for k, want in _CIFAR10_FIXED.items():
    same = (c[k].lower() == want.lower()) if isinstance(c[k], str) and isinstance(want, str) \
        else c[k] == want
    if not same:
      raise WeightsFileError(f"{path}: model.{k}={c[k]!r} has no cmjax song_unet equivalent "
                             f"(supported: {want!r}, the NCSN++ of configs/cifar10_ve_cd.py)")
  return c


def _layout10(c: dict) -> list:
  """[(flax module path in NCSNpp, cmjax module path, kind)] in NCSNpp.__call__ order
  (jcm/models/ncsnpp.py), flax's auto-names counted per class; kind in 'res' | 'attn' |
  'dense' | 'conv' | 'norm' | 'aux' | 'fourier'."""
  size, mult, nrb, attn = c["image_size"], c["ch_mult"], c["num_res_blocks"], c["attn_resolutions"]
  count = {"ResnetBlockBigGANpp": 0, "AttnBlockpp": 0, "Downsample": 0}

  def nxt(cls):
    count[cls] += 1
    return f"{cls}_{count[cls] - 1}"
  out = [("GaussianFourierProjection_0", "", "fourier"), ("Dense_0", "map_layer0", "dense"),
         ("Dense_1", "map_layer1", "dense"), ("Conv_0", f"enc_{size}x{size}_conv", "conv")]
  last = len(mult) - 1
  for level in range(last + 1):
    res = size >> level
    for i in range(nrb):
      out.append((nxt("ResnetBlockBigGANpp"), f"enc_{res}x{res}_block{i}", "res"))
      if res in attn:
        out.append((nxt("AttnBlockpp"), f"enc_{res}x{res}_block{i}", "attn"))
    if level != last:
      r = res >> 1
      out.append((nxt("ResnetBlockBigGANpp"), f"enc_{r}x{r}_down", "res"))
      out.append((nxt("Downsample"), f"enc_{r}x{r}_aux_residual", "aux"))
  low = size >> last
  out += [(nxt("ResnetBlockBigGANpp"), f"dec_{low}x{low}_in0", "res"),
          (nxt("AttnBlockpp"), f"dec_{low}x{low}_in0", "attn"),
          (nxt("ResnetBlockBigGANpp"), f"dec_{low}x{low}_in1", "res")]
  for level in reversed(range(last + 1)):
    res = size >> level
    for i in range(nrb + 1):
      out.append((nxt("ResnetBlockBigGANpp"), f"dec_{res}x{res}_block{i}", "res"))
    if res in attn:
      out.append((nxt("AttnBlockpp"), f"dec_{res}x{res}_block{nrb}", "attn"))
    if level:
      r = res * 2
      out.append((nxt("ResnetBlockBigGANpp"), f"dec_{r}x{r}_up", "res"))
  out += [("GroupNorm_0", f"dec_{size}x{size}_aux_norm", "norm"),
          ("Conv_1", f"dec_{size}x{size}_aux_conv", "conv")]
  return out


_RES10 = (("GroupNorm_0", "norm0"), ("Conv_0", "conv0"), ("Dense_0", "affine"),
          ("GroupNorm_1", "norm1"), ("Conv_1", "conv1"), ("Conv_2", "skip"))


def _name_map10(c: dict) -> dict:
  """'flax/module/path/leaf' -> 'cmjax/path/leaf' for everything but attention q/k/v and the
  Fourier weights (handled by `flax_to_cmjax`)."""
  out = {}
  for fpath, cpath, kind in _layout10(c):
    if kind == "res":
      for f, m in _RES10:
        for leaf in ("scale", "bias") if f.startswith("GroupNorm") else ("kernel", "bias"):
          out[f"{fpath}/{f}/{leaf}"] = f"{cpath}/{m}/{leaf}"
    elif kind == "attn":
      out[f"{fpath}/GroupNorm_0/scale"] = f"{cpath}/norm2/scale"
      out[f"{fpath}/GroupNorm_0/bias"] = f"{cpath}/norm2/bias"
      out[f"{fpath}/NIN_3/W"] = f"{cpath}/proj/kernel"
      out[f"{fpath}/NIN_3/b"] = f"{cpath}/proj/bias"
      for j in range(3):
        out[f"{fpath}/NIN_{j}/W"] = f"{cpath}/qkv/kernel"
        out[f"{fpath}/NIN_{j}/b"] = f"{cpath}/qkv/bias"
    elif kind == "aux":
      out[f"{fpath}/Conv2d_0/weight"] = f"{cpath}/kernel"
      out[f"{fpath}/Conv2d_0/bias"] = f"{cpath}/bias"
    elif kind == "norm":
      out[f"{fpath}/scale"], out[f"{fpath}/bias"] = f"{cpath}/scale", f"{cpath}/bias"
    elif kind in ("dense", "conv"):
      out[f"{fpath}/kernel"], out[f"{fpath}/bias"] = f"{cpath}/kernel", f"{cpath}/bias"
  return out


def flax_to_cmjax(path: str, state: dict, entry: str = "params_ema", **config) -> tuple:
  """A consistency_models_cifar10 state -> (config.model kwargs for cmjax 'song_unet', params,
  config used).

  score_sde's NCSN++ (jcm/models/ncsnpp.py, biggan blocks, FIR [1, 3, 3, 1], progressive_input
  'residual', progressive 'none', skip_rescale, Fourier embedding) is EDM's SongUNet NCSN++
  block for block: GaussianFourierProjection [sin, cos](2 pi t W) = EDM's swapped
  FourierEmbedding with freqs = W (returned as model_kwargs['fourier_freqs'], W is a parameter
  the file holds, never trained: stop_gradient); Dense_0/1 = map_layer0/1; ResnetBlockBigGANpp
  GroupNorm_0, Conv_0, Dense_0, GroupNorm_1, Conv_1, Conv_2 = norm0, conv0, affine, norm1, conv1,
  skip (flax layouts already); AttnBlockpp (one head, q/k/v as three NIN_0/1/2 (C, C)) = the qkv
  1x1 conv with channels interleaved (c, {q, k, v}); NIN_3 = proj; Downsample Conv2d_0 (fused
  conv + FIR downsampling) = enc_*_aux_residual; GroupNorm eps 1e-6 and min(C // 4, 32) groups
  in both. The CM time input is 0.25 log(t) (`get_distiller_fn`), cmjax's.

  Args:
    path: the file (for messages).
    state: `read_openai_msgpack`'s dict (State: step, lr, ema_rate, params, params_ema,
      [target_params], model_state, opt_state, rng_state).
    entry: which weights: 'params_ema' (what their sampling and evaluation use), 'params',
      'target_params'.
    **config: the model config fields (configs/*.py `config.model`, plus image_size and
      num_channels from config.data); defaults `CIFAR10_CONFIG`.
  Raises WeightsFileError, one line: an unsupported setting, the first parameter that has no
  place in or does not fit the network (expected and found shapes), or a missing one.
  """
  from cmjax.models import model_fields
  from cmjax.param_files import flatten_params, unflatten_params

  c = _config10(path, config)
  if entry not in ENTRIES:
    raise WeightsFileError(f"unknown entry {entry!r}; known: {ENTRIES}")
  tree = state.get(entry)
  if not isinstance(tree, dict) or not tree:
    raise WeightsFileError(f"{path}: no '{entry}' parameters (found {sorted(state)})")
  flat_in = flatten_params(tree)
  nf = int(c["nf"])
  kwargs = dict(name="song_unet", out_channels=0, label_dim=0, augment_dim=0, model_channels=nf,
                channel_mult=c["ch_mult"], channel_mult_emb=4, num_blocks=int(c["num_res_blocks"]),
                attn_resolutions=c["attn_resolutions"], dropout=float(c["dropout"]),
                label_dropout=0.0, embedding_type="fourier", channel_mult_noise=2,
                encoder_type="residual", decoder_type="standard", resample_filter=c["fir_kernel"],
                fourier_scale=float(c["fourier_scale"]))
  w = flat_in.get("GaussianFourierProjection_0/W")
  if w is None or np.shape(w) != (nf,):
    raise WeightsFileError(f"{path}: parameter 'GaussianFourierProjection_0/W' should be ({nf},), "
                           f"found {None if w is None else np.shape(w)}")
  kwargs["fourier_freqs"] = tuple(float(v) for v in np.asarray(w, np.float32))
  expected = _expected_shapes({k: v for k, v in kwargs.items() if k != "fourier_freqs" or
                               "fourier_freqs" in model_fields("song_unet")},
                              int(c["image_size"]), int(c["num_channels"]))
  names = _name_map10(c)
  flat, qkv = {}, {}
  for name, arr in flat_in.items():
    if name == "GaussianFourierProjection_0/W":
      continue
    a = np.asarray(arr, np.float32)
    key = names.get(name)
    if key is None or key not in expected:
      raise WeightsFileError(f"{path}: parameter '{name}' {a.shape} has no place in cmjax "
                             f"song_unet for this config")
    want = expected[key]
    if name.split("/")[-2] in ("NIN_0", "NIN_1", "NIN_2"):  # q, k, v -> interleaved qkv
      j = int(name.split("/")[-2][-1])
      want = (want[2], want[3] // 3) if key.endswith("kernel") else (want[0] // 3,)
      if a.shape != want:
        raise WeightsFileError(f"{path}: parameter '{name}' does not fit cmjax song_unet: "
                               f"expected {want}, found {a.shape}")
      qkv.setdefault(key, [None] * 3)[j] = a
      continue
    if key.endswith("proj/kernel") and a.ndim == 2:  # NIN_3 (C, C) -> 1x1 conv
      a = a[None, None]
    if a.shape != want:
      raise WeightsFileError(f"{path}: parameter '{name}' does not fit cmjax song_unet: expected "
                             f"{want if not key.endswith('proj/kernel') else want[2:]}, found "
                             f"{np.shape(arr)}")
    flat[key] = a
  for key, parts in qkv.items():
    if any(p is None for p in parts):
      raise WeightsFileError(f"{path}: the file lacks the q, k or v NIN of cmjax '{key}'")
    packed = np.stack(parts, axis=-1)  # (..., C, 3): channel index c * 3 + j (one head)
    flat[key] = packed.reshape(1, 1, *packed.shape[:-2], -1) if key.endswith("kernel") else (
        packed.reshape(-1))
  missing = [k for k in expected if k not in flat]
  if missing:
    back = {v: k for k, v in names.items()}
    raise WeightsFileError(f"{path}: the file lacks parameter '{back.get(missing[0], missing[0])}'"
                           f" (cmjax '{missing[0]}' {expected[missing[0]]})")
  return kwargs, unflatten_params(flat), c


def load_openai_cm10(path: str, entry: str = "params_ema", boundary: bool = True,
                     sigma_data: float = 0.5, sigma_min: float = 0.002, **config):
  """A consistency_models_cifar10 checkpoint (flax msgpack) -> `ImportedNetwork` with cmjax's
  own preconditioners, whose c_noise 0.25 log(t) is theirs: ConsistencyPreconditioner
  (boundary=True, `get_distiller_fn`, CD/CT checkpoints) or EDMPreconditioner (False,
  `get_denoiser_fn`, the EDM teacher edm_cifar10_ema). `**config`: see `flax_to_cmjax`."""
  from cmjax.weights.edm_pickle import ImportedNetwork

  state = read_openai_msgpack(path)
  kwargs, params, c = flax_to_cmjax(path, state, entry, **config)
  precond = (ConsistencyPreconditioner(sigma_data, sigma_min) if boundary
             else EDMPreconditioner(sigma_data))
  read = OpenAICheckpoint(path, "flax", {**c, "entry": entry}, flatten_state(state, entry))
  return ImportedNetwork(kwargs, params, precond, read)


def flatten_state(state: dict, entry: str) -> dict:
  """'{entry}/a/b/leaf' -> numpy array, for the checkpoint record."""
  from cmjax.param_files import flatten_params

  return {f"{entry}/{k}": np.asarray(v) for k, v in flatten_params(state[entry]).items()}
