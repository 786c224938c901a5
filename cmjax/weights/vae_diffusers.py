"""Loading diffusers `AutoencoderKL` weights (the SD VAE, `stabilityai/sd-vae-ft-ema` /
`sd-vae-ft-mse`) into `cmjax.models.vae.AutoencoderKL`, without torch or the safetensors package.

  vae, params = load_diffusers_vae("sd-vae-ft-ema/")   # config.json + *.safetensors
  z = cmjax.models.vae.encode(params, images, vae=vae)

Pieces: `read_safetensors` (the safetensors format: an 8-byte little-endian header length N, N
bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": ...}, then the
raw little-endian tensor bytes, offsets relative to the end of the header); `vae_from_config`
(diffusers config.json -> AutoencoderKL); `convert_state_dict` (diffusers names / NCHW layouts ->
the linen tree: "a.b.0.c.weight" -> a/b_0/c/kernel, conv weights (O, I, kh, kw) -> (kh, kw, I, O),
linear (O, I) -> (I, O), GroupNorm weight -> scale; the attention names of older diffusers files,
query / key / value / proj_attn, are read as to_q / to_k / to_v / to_out.0);
`save_vae_npz` / `load_vae_npz` (the flat '/'-keyed float32 .npz of `cmjax.param_files`, with the
config in a .json next to it; `scripts/convert_sd_vae.py` writes them).

A file that does not fit the config raises `cmjax.weights.safe_pickle.WeightsFileError` (a
ValueError) naming the first tensor that is missing, of the wrong shape (both shapes in diffusers'
layout) or unknown. Nothing read executes code: safetensors files are JSON plus raw arrays, and
`.bin` files (torch.save pickles, diffusers' save_pretrained(safe_serialization=False)) go through
`cmjax.weights.safe_pickle.load_torch_file`'s allow-listed unpickler, without torch.
"""
from __future__ import annotations

import json
import os
import re
from typing import Optional

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cmjax.models.vae import AutoencoderKL
from cmjax.param_files import checked_params, flatten_params, unflatten_params
from cmjax.weights.safe_pickle import WeightsFileError, load_torch_file


_ST_DTYPES = {"F16": np.float16, "BF16": ml_dtypes.bfloat16, "F32": np.float32, "F64": np.float64,
              "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8,
              "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """All tensors of a .safetensors file as numpy arrays (native byte order, copied out).

  Format: u64 little-endian N; N bytes of JSON header; the data buffer. Each header entry
  {"dtype": "F32", "shape": [...], "data_offsets": [b, e]} covers buffer bytes [b, e), which must
  be prod(shape) * itemsize long. Raises WeightsFileError on a malformed file or unknown dtype.
  """
  path = os.fspath(path)
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if n < 2 or 8 + n > size:
      raise WeightsFileError(f"{path}: not a safetensors file (header length {n}, file size {size})")
    try:
      header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise WeightsFileError(f"{path}: not a safetensors file (header is not JSON: {e})") from None
  if not isinstance(header, dict):
    raise WeightsFileError(f"{path}: not a safetensors file (header is not a JSON object)")
  buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n, shape=(size - 8 - n,)) \
      if size > 8 + n else np.zeros((0,), np.uint8)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    try:
      dtype, shape, (b, e) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError):
      raise WeightsFileError(f"{path}: malformed header entry for tensor '{name}': {info}") from None
    if dtype not in _ST_DTYPES:
      raise WeightsFileError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
    np_dtype = np.dtype(_ST_DTYPES[dtype]).newbyteorder("<")
    if not 0 <= b <= e <= buf.shape[0] or e - b != int(np.prod(shape)) * np_dtype.itemsize:
      raise WeightsFileError(f"{path}: tensor '{name}' ({dtype} {list(shape)}) has data offsets "
                             f"[{b}, {e}] that do not fit it or the file")
    arr = np.frombuffer(buf[b:e].tobytes(), dtype=np_dtype).reshape(shape)
    out[name] = arr.astype(arr.dtype.newbyteorder("="))
  return out


_CONFIG_FIELDS = ("in_channels", "out_channels", "block_out_channels", "layers_per_block",
                  "latent_channels", "norm_num_groups", "use_quant_conv", "use_post_quant_conv",
                  "mid_block_add_attention", "scaling_factor", "shift_factor")
_IGNORED = {"_class_name", "_diffusers_version", "_name_or_path", "sample_size", "force_upcast",
            "down_block_types", "up_block_types", "act_fn", "latents_mean", "latents_std"}


def vae_from_config(config: dict | str | os.PathLike, dtype=jnp.float32) -> AutoencoderKL:
  """A diffusers AutoencoderKL config (dict or config.json path) -> AutoencoderKL.

  Only the SD-style VAE is supported: DownEncoderBlock2D / UpDecoderBlock2D blocks, SiLU, no
  latents_mean / latents_std; anything else raises WeightsFileError naming the field. sample_size
  and force_upcast (tiling / fp16 hints) do not change the network and are ignored.
  """
  where = "config"
  if not isinstance(config, dict):
    where = os.fspath(config)
    try:
      with open(where) as f:
        config = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise WeightsFileError(f"{where}: cannot read the VAE config: {e}") from None
  if config.get("_class_name", "AutoencoderKL") != "AutoencoderKL":
    raise WeightsFileError(f"{where}: _class_name {config['_class_name']!r} is not AutoencoderKL")
  levels = len(config.get("block_out_channels", (64,)))
  for field, block in (("down_block_types", "DownEncoderBlock2D"),
                       ("up_block_types", "UpDecoderBlock2D")):
    types = tuple(config.get(field, (block,) * levels))
    if types != (block,) * levels:
      raise WeightsFileError(f"{where}: {field} {list(types)} unsupported; expected {levels} x {block}")
  if config.get("act_fn", "silu") not in ("silu", "swish"):
    raise WeightsFileError(f"{where}: act_fn {config['act_fn']!r} unsupported (only silu)")
  for field in ("latents_mean", "latents_std"):
    if config.get(field) is not None:
      raise WeightsFileError(f"{where}: {field} is set; per-channel latent statistics are unsupported")
  unknown = sorted(set(config) - set(_CONFIG_FIELDS) - _IGNORED)
  if unknown:
    raise WeightsFileError(f"{where}: unknown AutoencoderKL config fields {unknown}")
  # diffusers AutoencoderKL.__init__ defaults for fields a config leaves out
  kw = dict(in_channels=3, out_channels=3, block_out_channels=(64,), layers_per_block=1,
            latent_channels=4, norm_num_groups=32, use_quant_conv=True, use_post_quant_conv=True,
            mid_block_add_attention=True, scaling_factor=0.18215, shift_factor=None)
  kw.update({k: config[k] for k in _CONFIG_FIELDS if k in config})
  kw["block_out_channels"] = tuple(int(c) for c in kw["block_out_channels"])
  return AutoencoderKL(**kw, dtype=dtype)


def vae_config(vae: AutoencoderKL) -> dict:
  """The diffusers-style config fields of `vae` (JSON-serialisable), inverse of vae_from_config."""
  cfg = {k: getattr(vae, k) for k in _CONFIG_FIELDS}
  cfg["block_out_channels"] = list(cfg["block_out_channels"])
  levels = len(cfg["block_out_channels"])
  return {**cfg, "down_block_types": ["DownEncoderBlock2D"] * levels,
          "up_block_types": ["UpDecoderBlock2D"] * levels, "act_fn": "silu"}


def expected_shapes(vae: AutoencoderKL) -> dict[str, tuple]:
  """{flat linen key: shape} of vae's params, from jax.eval_shape (nothing is allocated)."""
  f = vae.downsampling_factor
  x = jax.ShapeDtypeStruct((1, f, f, vae.in_channels), jnp.float32)
  shapes = jax.eval_shape(lambda k, x: vae.init(k, x), jax.random.key(0), x)["params"]
  return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


_DEPRECATED_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _module_path(diffusers_key: str) -> tuple[str, str]:
  """'encoder.down_blocks.0.resnets.1.conv1.weight' -> ('encoder/down_blocks_0/resnets_1/conv1',
  'weight'); the old attention names query/key/value/proj_attn become to_q/to_k/to_v/to_out.0."""
  *mods, leaf = diffusers_key.split(".")
  if mods and mods[-1] in _DEPRECATED_ATTN:
    mods = mods[:-1] + _DEPRECATED_ATTN[mods[-1]].split(".")
  names: list[str] = []
  for m in mods:
    if re.fullmatch(r"\d+", m) and names:
      names[-1] += f"_{m}"
    else:
      names.append(m)
  return "/".join(names), leaf


def _torch_shape(linen_key: str, shape: tuple) -> tuple:
  """A linen leaf shape in diffusers' layout: conv (kh, kw, I, O) -> (O, I, kh, kw), dense
  (I, O) -> (O, I), vectors unchanged (for error messages)."""
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(reversed(shape))


def convert_state_dict(state: dict, vae: AutoencoderKL, where: str = "state dict") -> dict:
  """diffusers AutoencoderKL state dict {name: array} -> vae's nested float32 params tree.

  Checks, parameter by parameter (modules in sorted order, weight before bias): present (else
  'missing tensor X with shape S') and of the right shape (else 'tensor X has shape F, expected
  S'), shapes in diffusers' layout; then that every tensor is a parameter of `vae` (else
  'unknown tensor X'). Floating-point tensors only. A 1x1-conv attention weight (C, C, 1, 1), as
  some older conversions store it, is accepted for a (C, C) linear weight.
  """
  expected = expected_shapes(vae)
  sources: dict[str, str] = {}  # linen key -> diffusers key
  unknown = []
  for name in state:
    module, leaf = _module_path(name)
    key = None
    if leaf == "bias":
      key = f"{module}/bias"
    elif leaf == "weight":
      key = next((f"{module}/{p}" for p in ("kernel", "scale") if f"{module}/{p}" in expected), None)
    if key not in expected:
      unknown.append(name)
    elif key in sources:
      raise WeightsFileError(f"{where}: tensors '{sources[key]}' and '{name}' are the same parameter")
    else:
      sources[key] = name
  # modules in sorted order, a module's weight before its bias
  for key in sorted(expected, key=lambda k: (k.rsplit("/", 1)[0], k.endswith("/bias"))):
    shape = expected[key]
    if key not in sources:
      module, leaf = key.rsplit("/", 1)
      name = re.sub(r"_(\d+)(?=/|$)", r".\1", module).replace("/", ".")
      name += ".bias" if leaf == "bias" else ".weight"
      raise WeightsFileError(f"{where}: missing tensor '{name}' with shape {_torch_shape(key, shape)} "
                             f"for {_describe(vae)}")
    found = tuple(np.shape(state[sources[key]]))
    if len(shape) == 2 and len(found) == 4 and found[2:] == (1, 1):
      found = found[:2]
    if found != _torch_shape(key, shape):
      raise WeightsFileError(f"{where}: tensor '{sources[key]}' has shape {found}, expected "
                             f"{_torch_shape(key, shape)} for {_describe(vae)}")
  if unknown:
    raise WeightsFileError(f"{where}: unknown tensor '{unknown[0]}' with shape "
                           f"{tuple(np.shape(state[unknown[0]]))} (not a parameter of {_describe(vae)})"
                           + (f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""))
  flat = {}
  for key, shape in expected.items():
    name = sources[key]
    a = np.asarray(state[name])
    if not np.issubdtype(a.dtype, np.floating) and a.dtype != ml_dtypes.bfloat16:
      raise WeightsFileError(f"{where}: tensor '{name}' has dtype {a.dtype}, expected floating point")
    if len(shape) == 2 and a.ndim == 4:
      a = a[:, :, 0, 0]
    a = a.astype(np.float32)
    flat[key] = a.transpose(2, 3, 1, 0) if a.ndim == 4 else a.T if a.ndim == 2 else a
  return unflatten_params({k: jnp.asarray(np.ascontiguousarray(v)) for k, v in flat.items()})


def _describe(vae: AutoencoderKL) -> str:
  return (f"AutoencoderKL(block_out_channels={tuple(vae.block_out_channels)}, layers_per_block="
          f"{vae.layers_per_block}, latent_channels={vae.latent_channels})")


def find_weights(path: str | os.PathLike) -> tuple[str, Optional[str]]:
  """(weights file, config.json or None) for a diffusers model directory (or its 'vae'
  subfolder) or a weights file (config.json looked for next to it)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    if (not os.path.exists(os.path.join(path, "config.json"))
        and os.path.isdir(os.path.join(path, "vae"))):
      path = os.path.join(path, "vae")
    names = [n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
             if os.path.exists(os.path.join(path, n))]
    if not names:
      raise WeightsFileError(f"{path}: no diffusion_pytorch_model.safetensors (or .bin) in this "
                             "directory")
    weights, folder = os.path.join(path, names[0]), path
  elif os.path.isfile(path):
    weights, folder = path, os.path.dirname(os.path.abspath(path))
  else:
    raise WeightsFileError(f"{path}: no such file or directory")
  config = os.path.join(folder, "config.json")
  return weights, config if os.path.exists(config) else None


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """{name: array} of a .safetensors file (read_safetensors) or a torch.save .bin / .pt / .pth
  state dict (safe_pickle.load_torch_file: allow-listed unpickling, no torch, no code run)."""
  path = os.fspath(path)
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if not path.endswith((".bin", ".pt", ".pth")):
    raise WeightsFileError(f"{path}: expected a .safetensors or a torch .bin / .pt / .pth file")
  state = load_torch_file(path)
  if not isinstance(state, dict) or not all(isinstance(v, np.ndarray) for v in state.values()):
    raise WeightsFileError(f"{path}: not a state dict of tensors (a {type(state).__name__})")
  return dict(state)


def load_diffusers_vae(path: str | os.PathLike, config: Optional[dict | str] = None,
                       dtype=jnp.float32) -> tuple[AutoencoderKL, dict]:
  """(AutoencoderKL, params) from a diffusers directory (config.json +
  diffusion_pytorch_model.safetensors or .bin, or a pipeline directory with a vae/ subfolder) or
  a weights file with its config.json beside it; `config` (a dict / config.json path) overrides
  the one found. float32 params whatever the file's dtype."""
  weights, found = find_weights(path)
  config = found if config is None else config
  if config is None:
    raise WeightsFileError(f"{weights}: no config.json beside it; pass config= (e.g. "
                           "vae_config(sd_vae()) for the SD f8c4 VAE)")
  vae = vae_from_config(config, dtype=dtype)
  return vae, convert_state_dict(read_state_dict(weights), vae, where=weights)


def save_vae_npz(params: dict, vae: AutoencoderKL, path: str | os.PathLike) -> str:
  """Writes params as a flat '/'-keyed float32 .npz (cmjax.param_files layout) and the config as
  <path without .npz>.json; returns the json path."""
  path = os.fspath(path)
  if not path.endswith(".npz"):
    raise WeightsFileError(f"{path}: the output must end in .npz")
  np.savez(path, **{k: np.asarray(v, np.float32) for k, v in flatten_params(params).items()})
  cfg_path = path[:-4] + ".json"
  with open(cfg_path, "w") as f:
    json.dump({"_class_name": "AutoencoderKL", **vae_config(vae)}, f, indent=1)
  return cfg_path


def load_vae_npz(path: str | os.PathLike, vae: Optional[AutoencoderKL] = None,
                 dtype=jnp.float32) -> tuple[AutoencoderKL, dict]:
  """(vae, params) from an .npz written by save_vae_npz; vae None = built from the .json beside
  it. Shapes are checked against vae (cmjax.param_files.checked_params, one-line ValueError)."""
  path = os.fspath(path)
  if vae is None:
    cfg = path[:-4] + ".json" if path.endswith(".npz") else None
    if cfg is None or not os.path.exists(cfg):
      raise WeightsFileError(f"{path}: no config .json beside it; pass vae=")
    vae = vae_from_config(cfg, dtype=dtype)
  try:
    with np.load(path, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError) as e:
    raise WeightsFileError(f"{path}: cannot read the .npz: {e}") from None
  return vae, checked_params(arrays, expected_shapes(vae), path, "AutoencoderKL")
