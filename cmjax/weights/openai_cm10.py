"""openai/consistency_models_cifar10 flax msgpack checkpoints (score_sde's NCSN++) -> cmjax
SongUNet.

The correspondence is in `flax_to_cmjax`'s docstring and `cmjax.weights.openai_cm`'s (the public
names are importable from there); `cmjax.weights.openai_cm.load_openai_cm10` wraps the result
with the preconditioner.
"""
from __future__ import annotations

import numpy as np

from cmjax.errors import WeightsFileError

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
  from cmjax.weights.openai_cm_torch import expected_shapes

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
  expected = expected_shapes({k: v for k, v in kwargs.items() if k != "fourier_freqs" or
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


def flatten_state(state: dict, entry: str) -> dict:
  """'{entry}/a/b/leaf' -> numpy array, for the checkpoint record."""
  from cmjax.param_files import flatten_params

  return {f"{entry}/{k}": np.asarray(v) for k, v in flatten_params(state[entry]).items()}
