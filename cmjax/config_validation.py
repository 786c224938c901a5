"""Config checks that run before anything is compiled. Each failure is one clear line."""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import ml_collections

from cmjax import config_base
from cmjax.data import (DATASETS, check_data_config, data_kind, image_shape,
                        num_classes as data_num_classes)
from cmjax.errors import ConfigError  # noqa: F401 - re-exported
from cmjax.models import MODELS, model_fields, num_classes
from cmjax.objectives import OBJECTIVES, build_objective


def config_to_json_dict(config) -> dict:
  """The config as plain JSON types (tuples become lists), as stored in checkpoints."""
  d = config.to_dict() if hasattr(config, "to_dict") else config
  return json.loads(json.dumps(d))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, key + "."))
    else:
      out[key] = v
  return out


def check_known_keys(config, schema) -> None:
  """Every key of `config` must exist in `schema` (the base config); `model.*` must be fields of
  the named network (`cmjax.models.model_fields`)."""
  known = {k for k in flatten(config_to_json_dict(schema)) if not k.startswith("model.")}
  known |= {"model.name"} | {f"model.{f}" for f in model_fields(config.model.name)}
  for key in flatten(config_to_json_dict(config)):
    if key not in known:
      if key.startswith("model."):
        raise ConfigError(f"model.{key[6:]} is not an argument of model {config.model.name!r} (it "
                          f"takes {sorted(model_fields(config.model.name))})")
      raise ConfigError(f"unknown config key {key!r}")


def validate_config(config, num_devices: int) -> None:
  """Raises ConfigError for the first problem found in `config` (reads no file but the list of a
  folder data set and the existence of named weight files)."""
  def need(cond: bool, msg: str):
    if not cond:
      raise ConfigError(msg)

  need(config.model.name in MODELS, f"unknown model name {config.model.name!r}; known: {sorted(MODELS)}")
  check_known_keys(config, config_base.get_config())
  need(config.method in OBJECTIVES, f"unknown method {config.method!r}; known: {sorted(OBJECTIVES)}")
  need(config.data.name in DATASETS, f"unknown data set {config.data.name!r}; known: {sorted(DATASETS)}")
  tr, ev, op, pa = config.train, config.eval, config.optim, config.param
  need(op.name in ("adam", "radam", "muon"), f"unknown optimizer {op.name!r}; known: 'adam', 'radam', 'muon'")
  need(op.lr_decay in ("constant", "cosine", "inv_sqrt"),
       f"unknown optim.lr_decay {op.lr_decay!r}; known: 'constant', 'cosine', 'inv_sqrt'")
  need(op.lr_decay != "inv_sqrt" or op.lr_decay_steps > 0, f"optim.lr_decay='inv_sqrt' needs "
       f"optim.lr_decay_steps > 0 (EDM2's ref_batches), got {op.lr_decay_steps}")
  need(0 <= op.muon_beta < 1, f"optim.muon_beta must be in [0, 1), got {op.muon_beta}")
  need(op.lr > 0, f"optim.lr must be positive, got {op.lr}")
  need(op.warmup_steps >= 0, f"optim.warmup_steps must be >= 0, got {op.warmup_steps}")
  need(tr.sharding in ("data", "fsdp"), f"unknown train.sharding {tr.sharding!r}; known: 'data', 'fsdp'")
  need(tr.num_steps > 0, f"train.num_steps must be positive, got {tr.num_steps}")
  need(tr.batch_size > 0, f"train.batch_size must be positive, got {tr.batch_size}")
  need(tr.batch_size % num_devices == 0,
       f"train.batch_size {tr.batch_size} is not divisible by the number of devices ({num_devices})")
  need(tr.precision in ("fp32", "bf16"), f"unknown train.precision {tr.precision!r}; known: 'fp32', 'bf16'")
  need(tr.grad_accum >= 1, f"train.grad_accum must be >= 1, got {tr.grad_accum}")
  need(tr.batch_size % (tr.grad_accum * num_devices) == 0,
       f"train.batch_size {tr.batch_size} must split into train.grad_accum={tr.grad_accum} "
       f"micro-batches divisible by the number of devices ({num_devices})")
  for key in ("train.duration_kimg", "train.ema_halflife_kimg", "train.ema_rampup_ratio",
              "optim.warmup_kimg"):
    section, field = key.split(".")
    need(config[section][field] >= 0, f"{key} must be >= 0, got {config[section][field]}")
  need(tr.ema_rampup_ratio == 0 or tr.ema_halflife_kimg > 0,
       "train.ema_rampup_ratio needs train.ema_halflife_kimg > 0 (it ramps up the half-life)")
  need(ev.batch_size > 0 and ev.batch_size % num_devices == 0,
       f"eval.batch_size {ev.batch_size} must be positive and divisible by the number of devices ({num_devices})")
  need(0.0 <= tr.ema_rate < 1.0, f"train.ema_rate must be in [0, 1), got {tr.ema_rate}")
  need(tr.checkpoint_every > 0, f"train.checkpoint_every must be positive, got {tr.checkpoint_every}")
  need(tr.log_every > 0, f"train.log_every must be positive, got {tr.log_every}")
  need(tr.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {tr.keep_checkpoints}")
  need(tr.preempt_check_every >= 1, f"train.preempt_check_every must be >= 1, got {tr.preempt_check_every}")
  if tr.profile_steps:
    a, sep, b = str(tr.profile_steps).partition(":")
    need(bool(sep) and a.isdigit() and b.isdigit() and int(a) < int(b),
         f"train.profile_steps must be 'A:B' with 0 <= A < B (steps A..B-1 are traced), got "
         f"{tr.profile_steps!r}")
  kind = data_kind(config)
  if kind == "points":
    need(ev.num_samples >= 256, f"eval.num_samples must be >= 256 for the 2-D metrics, got {ev.num_samples}")
  elif config.data.name == "digits":
    need(ev.num_samples >= 1000, f"eval.num_samples must be >= 1000 for digits-FD, got {ev.num_samples}")
  need(ev.grid_rows >= 1, f"eval.grid_rows must be >= 1, got {ev.grid_rows}")
  if config.data.name == "digits":  # its pictures show grid_rows^2 of the eval.num_samples samples
    need(ev.grid_rows ** 2 <= ev.num_samples, f"eval.grid_rows={ev.grid_rows} needs "
         f"{ev.grid_rows ** 2} samples but a run makes eval.num_samples={ev.num_samples}; lower "
         f"eval.grid_rows (at most {int(ev.num_samples ** 0.5)}) or raise eval.num_samples")
  check_data_config(config)
  need(0 < pa.sigma_min < pa.sigma_max, f"need 0 < param.sigma_min < param.sigma_max, got "
       f"{pa.sigma_min}, {pa.sigma_max}")
  need(pa.sigma_data > 0, f"param.sigma_data must be positive, got {pa.sigma_data}")
  need(ev.ode_solver in ("heun", "euler"), f"unknown eval.ode_solver {ev.ode_solver!r}; known: 'heun', 'euler'")
  _check_model(config, need)
  objective = build_objective(config)  # the objective's own checks (its __post_init__)
  null = getattr(objective, "num_classes", 0)  # an objective that evaluates the null class itself
  need(not null or null == num_classes(config.model), f"{config.method}.num_classes={null} must "
       f"equal model.label_dim={num_classes(config.model)} (the null class id)")
  if null and config.model.name == "dit":  # the objective feeds DiT the null class itself
    m = config.model
    need(m.null_class or m.class_dropout_prob > 0, f"{config.method} evaluates the null class: "
         f"DiT needs its row (model.null_class=True)")
    need(not (getattr(objective, "class_dropout_prob", 0) > 0 and m.class_dropout_prob > 0),
         f"{config.method}.class_dropout_prob and model.class_dropout_prob would both drop labels; "
         f"set model.class_dropout_prob=0 and model.null_class=True")
  objective.family.check_config(config, need)
  _check_setup(config, need)


def _check_model(config, need) -> None:
  m = config.model
  fields = model_fields(m.name)
  if "dropout" in fields:
    need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
  if m.get("label_dim", 0):
    classes = data_num_classes(config)
    need(classes == m.label_dim, f"model.label_dim={m.label_dim} but data {config.data.name} has "
         f"{classes} classes" + (" (no labels)" if not classes else ""))
  if m.name == "unet":
    need(m.channels > 0 and m.channels % m.groups == 0,
         f"model.channels {m.channels} must be a positive multiple of model.groups {m.groups}")
  need(m.name == "mlp" or data_kind(config) != "points",
       f"data {config.data.name} is 2-D points: it needs model.name='mlp', not {m.name!r}")
  if m.name == "dit" and data_kind(config) != "points":
    h, w, ch = image_shape(config)
    need(m.input_size == h == w and m.in_channels == ch, f"model.input_size={m.input_size} and "
         f"model.in_channels={m.in_channels} do not fit data {config.data.name}'s examples of shape "
         f"{(h, w, ch)} (DiT takes input_size x input_size x in_channels)")
  if m.name in _UNETS and data_kind(config) != "points":
    mult = tuple(m.channel_mult)
    h, w = image_shape(config)[:2]
    need(len(mult) >= 1, f"model.channel_mult is empty; {m.name} needs at least one level")
    f = 2 ** (len(mult) - 1)  # every level but the first halves the resolution
    need(h % f == 0 and w % f == 0, f"model.channel_mult={mult} has {len(mult)} levels: {m.name} "
         f"halves the resolution {len(mult) - 1} times, but {config.data.name}'s {h}x{w} is not "
         f"divisible by {f}; use at most {_max_levels(h, w)} levels")
  if m.name == "mlp":
    need(m.hidden > 0 and m.depth >= 1, f"model.hidden and model.depth must be positive, got "
         f"{m.hidden}, {m.depth}")


_UNETS = ("unet", "song_unet", "adm", "edm2")  # U-Nets: each channel_mult level past the first downsamples


def _max_levels(h: int, w: int) -> int:
  """The most U-Net levels an h x w image allows (halving while both sides stay integers)."""
  n = 1
  while h % 2 == 0 and w % 2 == 0 and h > 1 and w > 1:
    h, w, n = h // 2, w // 2, n + 1
  return n


def _check_setup(config, need) -> None:
  """Checks of the config-only settings read by `cmjax.run` (teacher, LPIPS, initial weights)."""
  method = config.method
  s = config[method]
  if s.get("distance") == "lpips":
    need(data_kind(config) == "images", f"{method}.distance 'lpips' needs images, not {config.data.name}")
    need(bool(s.lpips_weights), f"{method}.distance is 'lpips' but {method}.lpips_weights is empty "
         f"(convert weights with scripts/convert_lpips_weights.py)")
    need(os.path.isfile(s.lpips_weights), f"{method}.lpips_weights: no such file {s.lpips_weights!r}")
    if s.lpips_weights.endswith(".npz"):  # truncated / corrupt: one line before compiling
      from cmjax.param_files import read_npz
      read_npz(s.lpips_weights, f"{method}.lpips_weights")
  need(not (config.train.init_workdir and config.train.init_from), "train.init_workdir and "
       "train.init_from both set the initial weights; choose one")
  if s.get("teacher_file"):
    need(not s.teacher_workdir, f"{method}.teacher_file and {method}.teacher_workdir both name the "
         f"teacher; choose one")
    need(os.path.isfile(s.teacher_file), f"{method}.teacher_file: no such file {s.teacher_file!r}")
  if config.train.init_from:
    need(os.path.isfile(config.train.init_from), f"train.init_from: no such file "
         f"{config.train.init_from!r}")
  if (config.train.init_workdir or config.train.init_from) and "init_from_teacher" in s:
    need(not s.init_from_teacher, f"train.{'init_workdir' if config.train.init_workdir else 'init_from'} "
         f"and {method}.init_from_teacher both set the initial weights; choose one")
  if s.get("exact_teacher"):
    need(config.data.name == "toy2d_gmm8", f"{method}.exact_teacher needs data toy2d_gmm8 (the mixture "
         f"whose denoiser is known), not {config.data.name}")
    need(not s.init_from_teacher and not s.teacher_workdir,
         f"{method}.exact_teacher has no teacher weights: set {method}.init_from_teacher=False and "
         f"leave {method}.teacher_workdir empty")


def comparable_config(saved: dict) -> dict:
  """A stored config (flattened) as today's schema would hold it: `model.*` fields the saved
  network does not take are dropped (configs written before config.model held one network's
  fields kept every network's, at their defaults, which validation required)."""
  flat = flatten(saved)
  name = flat.get("model.name")
  if name in MODELS:
    takes = set(model_fields(name))
    flat = {k: v for k, v in flat.items() if not k.startswith("model.") or k == "model.name"
            or k[6:] in takes}
  return flat


def saved_config(saved: dict):
  """A config stored with a checkpoint as a ConfigDict of today's schema (`comparable_config`)."""
  nested: dict = {}
  for key, value in comparable_config(saved).items():
    *path, leaf = key.split(".")
    d = nested
    for part in path:
      d = d.setdefault(part, {})
    d[leaf] = value
  return ml_collections.ConfigDict(nested)


def _default(key: str, model_name) -> Any:
  """The default of flattened config key `key` (model.* fields: the named network's default)."""
  if key.startswith("model.") and model_name in MODELS:
    value = model_fields(model_name).get(key[len("model."):], KeyError)
  else:
    value = flatten(config_to_json_dict(config_base.get_config())).get(key, KeyError)
  return json.loads(json.dumps(value)) if value is not KeyError else KeyError


def check_resume_compatible(saved: dict, config, workdir: str,
                            allowed: Callable[[str], bool] = config_base.is_resumable) -> None:
  """Refuses to resume when the checkpoint's config differs outside the fields `allowed(key)`
  accepts. A field cmjax added since the checkpoint was written, at its default, is no difference."""
  a, b = comparable_config(saved), flatten(config_to_json_dict(config))
  added = {k for k in set(b) - set(a) if b[k] == _default(k, b.get("model.name"))}
  diffs = [k for k in sorted(set(a) | set(b))
           if not allowed(k) and k not in added and a.get(k) != b.get(k)]
  if diffs:
    shown = "; ".join(f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}" for k in diffs[:3])
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise ConfigError(f"workdir {workdir} holds a checkpoint from a different config ({shown}{more}); "
                      f"use a new --workdir")
