"""EDM2 network pickles -> cmjax's EDM2 U-Net (`cmjax.models.edm2_unet.EDM2UNet`), its parameters
and EDM2's uncertainty head.

EDM2's training loop (NVlabs/edm2 `training/training_loop.py`, commit 4bf8162) writes each
snapshot as `data = EasyDict(encoder=..., dataset_kwargs=..., loss_fn=EDM2Loss(...));
data.ema = deepcopy(ema_net).cpu().eval().requires_grad_(False).to(torch.float16);
pickle.dump(data, f)`, and `reconstruct_phema.py` (which made the released
`edm2-img64-{xs,s,m,l,xl}-*.pkl` and `edm2-img512-*.pkl` with their post-hoc EMA) writes a deep copy
of such a dict with the reconstructed network in 'ema', again in float16; `generate_images.py`
samples `pickle.load(f)['ema']`. The network there is `training.networks_edm2.Precond` (EDM's
preconditioning, plus the log-variance head 'logvar_fourier' / 'logvar_linear') holding the
`UNet` as its submodule 'unet'. ECT's EDM2 snapshots (locuslab/ect imgnet branch
`training/networks_edm2.py`) have the same classes, without the log-variance head, and a UNet
argument `dropout_res` (-> cmjax's dropout_max_res).

`cmjax.weights.edm_pickle.read_edm_pickle` reads such a file (nothing in it runs, no torch) into an
`EDMNetwork` with precond_class 'Precond' and backbone_class 'UNet'; `edm2_to_cmjax` maps it:
the UNet's recorded constructor kwargs (EDM2's defaults for the rest) -> config.model kwargs of
the 'edm2' backbone; the state_dict names -> EDM2UNet / EDM2Logvar params by
`cmjax.models.edm2_unet.edm2_params_from_torch`'s rules (conv (O, I, k, k) -> (k, k, I, O),
linear (O, I) -> (I, O), MPFourier buffers freqs/phases kept as params). float16 values are
widened to float32 exactly. The file's preconditioning is EDM's (c_noise = ln(sigma) / 4):
`cmjax.parametrization.EDMPreconditioner(sigma_data)` (see `edm_preconds.preconditioner_from`).

Every EDM2 Precond file is taken as a denoiser (family 'edm' for sample.weights / eval.weights).
An ECT consistency-model snapshot of an EDM2 network has the same classes and preconditioning
(ECT's snapshot dict holds only 'ema'; its UNet records dropout_res and has no log-variance head),
so cmjax cannot tell it from the file's classes and does not guess: sampling one with a
consistency method is refused with one line, like any denoiser file.
"""
from __future__ import annotations

import numpy as np

from cmjax.weights.safe_pickle import PersistentObject, WeightsFileError

PRECOND, BACKBONE = "Precond", "UNet"

# NVlabs/edm2 training/networks_edm2.py UNet.__init__ and Block.__init__ defaults (commit 4bf8162);
# dropout_res: ECT's UNet argument (locuslab/ect imgnet branch), None = dropout everywhere.
UNET_DEFAULTS = dict(model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_noise=None,
                     channel_mult_emb=None, num_blocks=3, attn_resolutions=(16, 8),
                     label_balance=0.5, concat_balance=0.5, dropout_res=None,
                     resample_filter=(1, 1), channels_per_head=64, dropout=0.0,
                     res_balance=0.3, attn_balance=0.3, clip_act=256)
PRECOND_DEFAULTS = dict(use_fp16=True, sigma_data=0.5, logvar_channels=128)
_INTERFACE = ("img_resolution", "img_channels", "label_dim")


def is_edm2(net) -> bool:
  """Whether a pickled network record is EDM2's Precond holding a UNet as 'unet'."""
  if not isinstance(net, PersistentObject) or net.class_name != PRECOND:
    return False
  unet = (net.state.get("_modules") or {}).get("unet")
  return isinstance(unet, PersistentObject) and unet.class_name == BACKBONE


def edm2_model_kwargs(read) -> dict:
  """config.model kwargs (with name='edm2') of the UNet in an `EDMNetwork` read from an EDM2
  pickle: its recorded constructor kwargs over EDM2's defaults. One line for an argument cmjax's
  EDM2UNet cannot express (a resample filter other than [1, 1], an unknown argument)."""
  recorded = dict(read.backbone_kwargs)
  unknown = sorted(set(recorded) - set(UNET_DEFAULTS) - set(_INTERFACE))
  if unknown:
    raise WeightsFileError(f"{read.path}: EDM2 UNet argument(s) {unknown} have no cmjax equivalent")
  kw = {**UNET_DEFAULTS, **{k: v for k, v in recorded.items() if k in UNET_DEFAULTS}}
  if [int(v) for v in kw["resample_filter"]] != [1, 1]:
    raise WeightsFileError(f"{read.path}: EDM2 UNet resample_filter={list(kw['resample_filter'])}; "
                           f"cmjax's EDM2UNet has only [1, 1]")
  label_dim = recorded.get("label_dim", read.precond_config.get("label_dim", 0))
  return dict(name="edm2", out_channels=0, label_dim=int(label_dim),
              model_channels=int(kw["model_channels"]),
              channel_mult=tuple(int(v) for v in kw["channel_mult"]),
              channel_mult_noise=int(kw["channel_mult_noise"] or 0),
              channel_mult_emb=int(kw["channel_mult_emb"] or 0),
              num_blocks=int(kw["num_blocks"]),
              attn_resolutions=tuple(int(v) for v in kw["attn_resolutions"]),
              label_balance=float(kw["label_balance"]), concat_balance=float(kw["concat_balance"]),
              res_balance=float(kw["res_balance"]), attn_balance=float(kw["attn_balance"]),
              channels_per_head=int(kw["channels_per_head"]), dropout=float(kw["dropout"]),
              dropout_max_res=int(kw["dropout_res"] or 0), label_dropout=0.0,
              clip_act=float(kw["clip_act"] or 0))


def logvar_channels(read) -> int:
  """Width of the Precond's log-variance head: its recorded logvar_channels (EDM2 default 128)."""
  kw = {**PRECOND_DEFAULTS, **read.precond_kwargs}
  return int(kw["logvar_channels"])


def _expected(model_kwargs: dict, read) -> dict:
  """{'unet': {'a/b/leaf': shape}, 'logvar': {...}} of cmjax's EDM2UNet / EDM2Logvar params for
  the file's settings (jax.eval_shape: nothing allocated)."""
  import jax
  import jax.numpy as jnp

  from cmjax.models.edm2_precond import EDM2Logvar
  from cmjax.models.edm2_unet import EDM2UNet
  from cmjax.param_files import flatten_params

  c = read.precond_config
  res, cin = int(c.get("img_resolution", -1)), int(c.get("img_channels", -1))
  if res < 1 or cin < 1:
    raise WeightsFileError(f"{read.path}: the EDM2 Precond records no img_resolution/img_channels")
  model = EDM2UNet(**{k: v for k, v in model_kwargs.items() if k != "name"})
  x, t = jnp.zeros((1, res, res, cin)), jnp.zeros((1,))
  labels = jnp.zeros((1,), jnp.int32) if model.label_dim else None
  try:
    unet = jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, class_labels=labels))
  except ValueError as e:
    raise WeightsFileError(f"{read.path}: cmjax's EDM2UNet cannot take the file's settings: "
                           f"{e}") from None
  head = jax.eval_shape(lambda: EDM2Logvar(logvar_channels(read)).init(jax.random.key(0), t))
  return {tree: {k: tuple(v.shape) for k, v in flatten_params(p["params"]).items()}
          for tree, p in (("unet", unet), ("logvar", head))}


def _torch_shape(key: str, shape: tuple) -> tuple:
  """A flax param shape in EDM2's torch layout (for error messages)."""
  if key.endswith("kernel") and len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if key.endswith("kernel") and len(shape) == 2:
    return (shape[1], shape[0])
  return tuple(shape)


def edm2_to_cmjax(read) -> tuple[dict, dict, dict | None]:
  """EDM2 network -> (config.model kwargs incl. name='edm2', EDM2UNet params, EDM2Logvar params
  or None when the file has no log-variance head (ECT's snapshots)); arrays float32 numpy.

  Raises WeightsFileError, one line: the first tensor that does not fit cmjax's layout for the
  recorded settings (its torch name, expected and found shapes, torch layout), an unknown tensor,
  or a missing parameter.
  """
  from cmjax.models.edm2_unet import _torch_to_flax
  from cmjax.param_files import unflatten_params

  kwargs = edm2_model_kwargs(read)
  expected = _expected(kwargs, read)
  flat = {"unet": {}, "logvar": {}}
  for name, arr in read.tensors.items():
    try:
      tree, path, value = _torch_to_flax(name, np.asarray(arr, np.float32))
    except ValueError as e:
      raise WeightsFileError(f"{read.path}: {e}") from None
    key = "/".join(path)
    want = expected[tree].get(key)
    if want is None:
      raise WeightsFileError(f"{read.path}: tensor '{name}' {tuple(arr.shape)} has no place in "
                             f"cmjax's EDM2 network (no '{key}')")
    if value.shape != want:
      raise WeightsFileError(f"{read.path}: parameter '{name}' does not fit cmjax edm2: expected "
                             f"{_torch_shape(key, want)}, found {tuple(arr.shape)}")
    flat[tree][key] = value
  missing = [k for k in expected["unet"] if k not in flat["unet"]]
  if missing:
    raise WeightsFileError(f"{read.path}: the file lacks cmjax edm2 parameter '{missing[0]}' "
                           f"{expected['unet'][missing[0]]}")
  logvar = None
  if flat["logvar"]:
    gone = [k for k in expected["logvar"] if k not in flat["logvar"]]
    if gone:
      raise WeightsFileError(f"{read.path}: the file's log-variance head lacks '{gone[0]}'")
    logvar = unflatten_params(flat["logvar"])
  return kwargs, unflatten_params(flat["unet"]), logvar
