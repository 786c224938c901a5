"""EDM-format network pickles -> cmjax backbones and parameter trees.

Reads the `.pkl` snapshots written by EDM's training loop (NVlabs/edm, Karras et al. 2022:
`pickle.dump(dict(ema=net, loss_fn=..., augment_pipe=..., dataset_kwargs=...))`), which is also
the format of ECT's snapshots (locuslab/ect, Geng et al. 2024) and of EDM's published
`edm-cifar10-32x32-*-{vp,ve}.pkl`, `edm-imagenet-64x64-cond-adm.pkl` and `baseline-*.pkl`.
The file is read by `cmjax.weights.safe_pickle` (no code from the file runs, no torch needed).

`read_edm_pickle(path)` -> `EDMNetwork` (preconditioner class and settings, backbone class and
constructor kwargs, every parameter and buffer under its torch name, e.g.
'model.enc.32x32_conv.weight'); `to_cmjax(read)` -> (config.model kwargs, params) for
`cmjax.models.song_unet.SongUNet` (EDM's SongUNet: DDPM++ / NCSN++) or
`cmjax.models.adm_unet.ADMUNet` (EDM's DhariwalUNet) or, for EDM2's pickles (NVlabs/edm2
`Precond` + `UNet`, edm2-img64-*.pkl / edm2-img512-*.pkl; `cmjax.weights.edm2_pickle`),
`cmjax.models.edm2_unet.EDM2UNet`, mapped as tests/test_song_unet.py and
tests/test_adm_unet.py map weights: Linear (out, in) -> Dense kernel (in, out), Conv2d
(O, I, kh, kw) -> kernel (kh, kw, I, O), GroupNorm weight -> scale, 'enc.8x8_block0.norm0' ->
'enc_8x8_block0/norm0'. Buffers are checked (resample filters) or returned (NCSN++'s Fourier
frequencies, `fourier_freqs` in the model kwargs).
"""
from __future__ import annotations

import dataclasses
import numpy as np

from cmjax.weights import edm2_pickle
from cmjax.weights.safe_pickle import (ModuleRecord, PersistentObject, WeightsFileError,
                                       load_pickle)

PRECONDITIONERS = ("EDMPrecond", "VPPrecond", "VEPrecond", "ECMPrecond", edm2_pickle.PRECOND)
BACKBONES = {"SongUNet": "song_unet", "DhariwalUNet": "adm", edm2_pickle.BACKBONE: "edm2"}

# EDM's constructor defaults (training/networks.py; identical in locuslab/ect), for the kwargs a
# pickle did not record because train.py left them at their defaults.
_SONG_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=128, channel_mult=(1, 2, 2, 2),
                      channel_mult_emb=4, num_blocks=4, attn_resolutions=(16,), dropout=0.10,
                      label_dropout=0.0, embedding_type="positional", channel_mult_noise=1,
                      encoder_type="standard", decoder_type="standard", resample_filter=(1, 1))
_ADM_DEFAULTS = dict(label_dim=0, augment_dim=0, model_channels=192, channel_mult=(1, 2, 3, 4),
                     channel_mult_emb=4, num_blocks=3, attn_resolutions=(32, 16, 8), dropout=0.10,
                     label_dropout=0.0)
_DEFAULTS = {"SongUNet": _SONG_DEFAULTS, "DhariwalUNet": _ADM_DEFAULTS}
_INTERFACE = ("img_resolution", "in_channels", "out_channels")


@dataclasses.dataclass
class EDMNetwork:
  """What an EDM network pickle holds (see `read_edm_pickle`).

  Attributes:
    path, entry: the file and its top-level entry read ('ema').
    precond_class: 'EDMPrecond' | 'VPPrecond' | 'VEPrecond' | 'ECMPrecond' | 'Precond' (EDM2).
    precond_config: the preconditioner's scalar attributes as pickled (constructor defaults
      applied): img_resolution, img_channels, label_dim, use_fp16, sigma_data, sigma_min,
      sigma_max, beta_d, beta_min, M, epsilon_t, ... (whichever the class has).
    backbone_class: 'SongUNet' | 'DhariwalUNet' | 'UNet' (EDM2).
    backbone_kwargs: the backbone's constructor kwargs as recorded by EDM's persistence.
    tensors: torch name ('model.map_layer0.weight'; EDM2: 'unet.enc.64x64_conv.weight',
      'logvar_linear.weight') -> numpy array (the file's dtype and torch layout), parameters and
      persistent buffers.
    buffers: the names in `tensors` that are buffers, not parameters.
    owners: torch name -> class name of the module holding it ('Linear', 'Conv2d', ...).
    source_sha256: hash of the embedded networks.py source (never executed).
    precond_kwargs: the preconditioner's recorded constructor kwargs (EDM2: logvar_channels).
  """
  path: str
  entry: str
  precond_class: str
  precond_config: dict
  backbone_class: str
  backbone_kwargs: dict
  tensors: dict
  buffers: frozenset
  owners: dict
  source_sha256: str
  precond_kwargs: dict = dataclasses.field(default_factory=dict)


def _walk(obj, prefix: str, tensors: dict, buffers: set, owners: dict, where: str) -> None:
  """Collects `obj`'s parameters/buffers and its submodules' under dotted torch names."""
  if not isinstance(obj, (PersistentObject, ModuleRecord)):
    raise WeightsFileError(f"{where}: module '{prefix.rstrip('.')}' is a {type(obj).__name__}, "
                           f"not a pickled torch module")
  state, cls = obj.state, obj.class_name
  skip = set(state.get("_non_persistent_buffers_set") or ())
  for group in ("_parameters", "_buffers"):
    for name, arr in (state.get(group) or {}).items():
      if arr is None or name in skip:
        continue
      if not isinstance(arr, np.ndarray):
        raise WeightsFileError(f"{where}: '{prefix}{name}' is a {type(arr).__name__}, not a tensor")
      tensors[prefix + name], owners[prefix + name] = arr, cls
      if group == "_buffers":
        buffers.add(prefix + name)
  for name, sub in (state.get("_modules") or {}).items():
    if sub is not None:
      _walk(sub, f"{prefix}{name}.", tensors, buffers, owners, where)


def _scalar(v) -> bool:
  return isinstance(v, (bool, int, float, str, np.number, np.bool_))


def read_edm_pickle(path: str, entry: str = "ema") -> EDMNetwork:
  """Reads an EDM/ECT network pickle without executing it (see the module docstring).

  Args:
    path: the .pkl file.
    entry: the top-level entry holding the network; 'ema' (what EDM's generate.py, EDM2's
      generate_images.py and ECT's --transfer use).
  Raises WeightsFileError (UnsafePickleError for a refused global), one line.
  """
  data = load_pickle(path)
  if not isinstance(data, dict) or entry not in data:
    keys = sorted(data) if isinstance(data, dict) else type(data).__name__
    raise WeightsFileError(f"{path}: no entry '{entry}' (found {keys})")
  net = data[entry]
  if not isinstance(net, PersistentObject):
    raise WeightsFileError(f"{path}: entry '{entry}' is a {type(net).__name__}, not an EDM "
                           f"persistent network")
  if net.class_name not in PRECONDITIONERS:
    raise WeightsFileError(f"{path}: unsupported preconditioner class '{net.class_name}' "
                           f"(supported: {', '.join(PRECONDITIONERS)})")
  sub = "unet" if net.class_name == edm2_pickle.PRECOND else "model"
  model = (net.state.get("_modules") or {}).get(sub)
  if not isinstance(model, PersistentObject):
    raise WeightsFileError(f"{path}: {net.class_name} has no persistent '{sub}' submodule")
  if model.class_name not in BACKBONES or (sub == "unet") != edm2_pickle.is_edm2(net):
    raise WeightsFileError(f"{path}: unsupported backbone class '{model.class_name}' "
                           f"(supported: {', '.join(BACKBONES)})")
  tensors, buffers, owners = {}, set(), {}
  _walk(net, "", tensors, buffers, owners, path)
  config = {k: (v.item() if isinstance(v, (np.number, np.bool_)) else v)
            for k, v in net.state.items() if not k.startswith("_") and k != "training"
            and _scalar(v)}
  return EDMNetwork(path, entry, net.class_name, config, model.class_name, model.init_kwargs,
                    tensors, frozenset(buffers), owners, model.source_sha256, net.init_kwargs)


def _model_kwargs(read: EDMNetwork) -> dict:
  """cmjax config.model kwargs (with 'name') from the recorded backbone kwargs + EDM defaults."""
  defaults = _DEFAULTS[read.backbone_class]
  recorded = dict(read.backbone_kwargs)
  unknown = sorted(set(recorded) - set(defaults) - set(_INTERFACE))
  if unknown:
    raise WeightsFileError(f"{read.path}: {read.backbone_class} argument(s) {unknown} have no "
                           f"cmjax equivalent")
  kw = {**defaults, **{k: v for k, v in recorded.items() if k in defaults}}
  for k in ("channel_mult", "attn_resolutions", "resample_filter"):
    if k in kw:
      kw[k] = tuple(int(v) for v in kw[k])
  out = dict(name=BACKBONES[read.backbone_class], **kw)
  out["out_channels"] = int(recorded.get("out_channels", 0))
  if out["out_channels"] == int(recorded.get("in_channels", -1)):
    out["out_channels"] = 0  # cmjax: 0 = the input's channel count
  out["dropout"], out["label_dropout"] = float(kw["dropout"]), float(kw["label_dropout"])
  return out


def _cmjax_path(torch_name: str) -> tuple[list[str], str]:
  """'model.enc.8x8_block0.norm0.weight' -> (['enc_8x8_block0', 'norm0'], 'weight')."""
  parts = torch_name.split(".")
  if parts[0] != "model" or len(parts) < 3:
    raise WeightsFileError(f"tensor '{torch_name}' is outside the backbone")
  parts = parts[1:]
  if parts[0] in ("enc", "dec"):
    parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
  return parts[:-1], parts[-1]


def _convert(owner: str, leaf: str, arr: np.ndarray, name: str) -> tuple[str, np.ndarray]:
  """One torch tensor -> (flax leaf name, array in flax layout), float32."""
  a = np.asarray(arr, np.float32)
  if owner == "Linear" and leaf == "weight" and a.ndim == 2:
    return "kernel", a.T
  if owner == "Conv2d" and leaf == "weight" and a.ndim == 4:
    return "kernel", a.transpose(2, 3, 1, 0)
  if owner == "GroupNorm" and leaf == "weight":
    return "scale", a
  if leaf == "bias" and owner in ("Linear", "Conv2d", "GroupNorm"):
    return "bias", a
  raise WeightsFileError(f"tensor '{name}' of a {owner} ({a.shape}) has no cmjax layout")


def _torch_shape(leaf: str, shape: tuple) -> tuple:
  """A flax leaf shape in torch layout (for error messages)."""
  if leaf == "kernel" and len(shape) == 2:
    return (shape[1], shape[0])
  if leaf == "kernel" and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  return tuple(shape)


def _expected_shapes(model_kwargs: dict, read: EDMNetwork) -> dict:
  """'a/b/leaf' -> shape of the cmjax backbone's params (jax.eval_shape, nothing allocated)."""
  import jax
  import jax.numpy as jnp

  from cmjax.models import MODELS
  from cmjax.param_files import flatten_params

  kw = {k: v for k, v in model_kwargs.items() if k not in ("name", "fourier_freqs")}
  model = MODELS[model_kwargs["name"]](**kw)
  res = int(read.backbone_kwargs.get("img_resolution", read.precond_config.get("img_resolution")))
  cin = int(read.backbone_kwargs.get("in_channels", read.precond_config.get("img_channels")))
  x, c = jnp.zeros((1, res, res, cin)), jnp.zeros((1,))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, c))["params"]
  return {k: tuple(v.shape) for k, v in flatten_params(shapes).items()}


def _filter(taps) -> np.ndarray:
  f = np.asarray(taps, np.float32)
  return (np.outer(f, f) / f.sum() ** 2)[None, None]


def to_cmjax(read: EDMNetwork) -> tuple[dict, dict]:
  """EDM backbone -> (cmjax config.model kwargs incl. 'name', params tree of float32 arrays).

  SongUNet -> 'song_unet' (cmjax.models.song_unet.SongUNet), DhariwalUNet -> 'adm'
  (cmjax.models.adm_unet.ADMUNet). A Fourier-embedding SongUNet (NCSN++) also gets
  'fourier_freqs': the file's FourierEmbedding.freqs buffer (channels/2 floats), which EDM
  draws at random once and stores; cmjax's SongUNet must use it instead of its seeded draw
  (`make_model` refuses the kwargs when SongUNet has no such field). Resample-filter buffers
  are checked against the recorded resample_filter.

  EDM2's UNet -> 'edm2' (`cmjax.weights.edm2_pickle.edm2_to_cmjax`; its log-variance head is
  returned by `load_edm_network`, not here).

  Raises WeightsFileError, one line: the first tensor that does not fit the cmjax layout (its
  torch name, expected and found shapes), a missing parameter, or a buffer that disagrees.
  """
  if read.backbone_class == edm2_pickle.BACKBONE:
    return edm2_pickle.edm2_to_cmjax(read)[:2]
  if read.backbone_class not in BACKBONES:
    raise WeightsFileError(f"{read.path}: unsupported backbone class '{read.backbone_class}' "
                           f"(supported: {', '.join(BACKBONES)})")
  kwargs = _model_kwargs(read)
  expected = _expected_shapes(kwargs, read)
  flat: dict = {}
  for name, arr in read.tensors.items():
    parents, leaf = _cmjax_path(name)
    owner = read.owners[name]
    if name in read.buffers:
      if leaf == "resample_filter":
        want = _filter(kwargs.get("resample_filter", (1, 1)))
        if arr.shape != want.shape or not np.allclose(np.asarray(arr, np.float32), want, atol=1e-6):
          raise WeightsFileError(f"{read.path}: buffer '{name}' {arr.shape} is not the filter of "
                                 f"resample_filter={kwargs.get('resample_filter')}")
      elif leaf == "freqs" and owner == "FourierEmbedding":
        half = kwargs["model_channels"] * kwargs.get("channel_mult_noise", 1) // 2
        if arr.shape != (half,):
          raise WeightsFileError(f"{read.path}: buffer '{name}' has shape {arr.shape}, expected "
                                 f"({half},)")
        kwargs["fourier_freqs"] = tuple(float(v) for v in np.asarray(arr, np.float32))
      else:
        raise WeightsFileError(f"{read.path}: unknown buffer '{name}' of a {owner}")
      continue
    flax_leaf, value = _convert(owner, leaf, arr, name)
    key = "/".join(parents + [flax_leaf])
    if key not in expected:
      raise WeightsFileError(f"{read.path}: parameter '{name}' {tuple(arr.shape)} has no place in "
                             f"cmjax {kwargs['name']} (expected no '{key}')")
    if value.shape != expected[key]:
      raise WeightsFileError(f"{read.path}: parameter '{name}' does not fit cmjax "
                             f"{kwargs['name']}: expected {_torch_shape(flax_leaf, expected[key])}"
                             f", found {tuple(arr.shape)}")
    flat[key] = value
  missing = [k for k in expected if k not in flat]
  if missing:
    raise WeightsFileError(f"{read.path}: the file lacks cmjax {kwargs['name']} parameter "
                           f"'{missing[0]}' {expected[missing[0]]}")
  if kwargs.get("embedding_type") == "fourier" and "fourier_freqs" not in kwargs:
    raise WeightsFileError(f"{read.path}: a Fourier-embedding SongUNet without its freqs buffer")
  from cmjax.param_files import unflatten_params
  return kwargs, unflatten_params(flat)


def make_model(model_kwargs: dict):
  """The cmjax backbone for `to_cmjax`'s kwargs; one-line error when cmjax cannot take them."""
  from cmjax.models import MODELS, model_fields

  name = model_kwargs["name"]
  extra = sorted(set(model_kwargs) - {"name"} - set(model_fields(name)))
  if extra == ["fourier_freqs"]:
    raise WeightsFileError("cmjax's SongUNet has no 'fourier_freqs' field, so it cannot use the "
                           "file's NCSN++ Fourier frequencies (it draws its own from a seed)")
  if extra:
    raise WeightsFileError(f"cmjax {name} does not take {extra}")
  return MODELS[name](**{k: v for k, v in model_kwargs.items() if k != "name"})


@dataclasses.dataclass
class ImportedNetwork:
  """`load_edm_network`'s result: backbone kwargs/params, the preconditioner and the raw read;
  logvar_params: EDM2's log-variance head (`cmjax.models.edm2_precond.EDM2Logvar` params) when
  the file has one, else None. The head only weights EDM2's training loss (u(sigma), Eq. 21):
  sampling never uses it, and no cmjax objective takes it (train.init_from ignores it)."""
  model_kwargs: dict
  params: dict
  precond: object
  read: EDMNetwork
  logvar_params: dict | None = None


def load_edm_network(path: str, entry: str = "ema") -> ImportedNetwork:
  """read_edm_pickle + to_cmjax + edm_preconds.preconditioner_from, in one call.

  D(x; sigma) of the file's network is then
  `net.precond(lambda x_in, c_noise: make_model(net.model_kwargs).apply({'params':
  net.params}, x_in, c_noise, class_labels=labels), x (B, H, W, C), sigma (B,))`.
  """
  from cmjax.weights.edm_preconds import preconditioner_from

  read = read_edm_pickle(path, entry)
  if read.backbone_class == edm2_pickle.BACKBONE:
    kwargs, params, logvar = edm2_pickle.edm2_to_cmjax(read)
    return ImportedNetwork(kwargs, params, preconditioner_from(read), read, logvar)
  kwargs, params = to_cmjax(read)
  return ImportedNetwork(kwargs, params, preconditioner_from(read), read)


def describe(read: EDMNetwork) -> str:
  """One line: 'EDMPrecond(sigma_data=0.5) + SongUNet(...)', parameter count."""
  n = sum(int(a.size) for k, a in read.tensors.items() if k not in read.buffers)
  pc = ", ".join(f"{k}={v}" for k, v in sorted(read.precond_config.items())
                 if k in ("sigma_data", "sigma_min", "sigma_max", "beta_d", "beta_min", "M",
                          "epsilon_t", "use_fp16"))
  return f"{read.precond_class}({pc}) + {read.backbone_class}: {n:,} parameters"



def edm_state_dict(params: dict, model_kwargs: dict | None = None) -> dict:
  """Inverse of `to_cmjax`'s mapping: a cmjax SongUNet/ADMUNet params tree -> {EDM torch name:
  float32 array in torch layout}, e.g. 'enc_8x8_block0/conv0/kernel' (3, 3, I, O) ->
  'model.enc.8x8_block0.conv0.weight' (O, I, 3, 3). With model_kwargs holding 'fourier_freqs'
  the NCSN++ buffer 'model.map_noise.freqs' is included; resample-filter buffers are not (they
  follow from resample_filter)."""
  from cmjax.param_files import flatten_params

  out = {}
  for key, value in flatten_params(params).items():
    *parents, leaf = key.split("/")
    a = np.asarray(value, np.float32)
    head = parents[0]
    if head.startswith(("enc_", "dec_")):
      head = head.replace("_", ".", 1)
    name = ".".join(["model", head] + parents[1:])
    if leaf == "kernel":
      a = a.T if a.ndim == 2 else a.transpose(3, 2, 0, 1)
    elif leaf not in ("scale", "bias"):
      raise WeightsFileError(f"parameter '{key}' has no EDM name")
    out[f"{name}.{'weight' if leaf in ('kernel', 'scale') else 'bias'}"] = np.ascontiguousarray(a)
  if model_kwargs and model_kwargs.get("fourier_freqs") is not None:
    out["model.map_noise.freqs"] = np.asarray(model_kwargs["fourier_freqs"], np.float32)
  return out


def export_edm_safetensors(params: dict, model_kwargs: dict, path: str) -> None:
  """Writes a cmjax SongUNet/ADMUNet params tree as a safetensors file under EDM's names
  (`edm_state_dict`; 'model.enc.32x32_conv.weight', ...), loadable into EDM's EDMPrecond with
  `load_state_dict(..., strict=False)`. Needs the `safetensors` package, which is not a cmjax
  dependency (pip install safetensors); raises one line when it is missing."""
  try:
    from safetensors.numpy import save_file
  except ImportError:
    raise WeightsFileError("export_edm_safetensors needs the 'safetensors' package (pip install "
                           "safetensors); it is not a cmjax dependency") from None
  save_file(edm_state_dict(params, model_kwargs), path,
            metadata={"format": "pt", "cmjax_model": str(model_kwargs.get("name", ""))})
