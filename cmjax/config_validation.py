"""Config checks that run before anything is compiled. Each failure is one clear line."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable


from cmjax.errors import ConfigError  # noqa: F401 - re-exported


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
  """Every key of `config` must exist in `schema` (the base config)."""
  known = flatten(config_to_json_dict(schema))
  for key in flatten(config_to_json_dict(config)):
    if key not in known:
      raise ConfigError(f"unknown config key {key!r}")


def validate_config(config, num_devices: int) -> None:
  """Raises ConfigError for the first problem found in `config`."""
  from cmjax import config_base  # the schema of every config
  from cmjax.models import MODELS
  from cmjax.objectives import OBJECTIVES
  from cmjax.data import DATASETS

  check_known_keys(config, config_base.get_config())

  def need(cond: bool, msg: str):
    if not cond:
      raise ConfigError(msg)

  need(config.method in OBJECTIVES, f"unknown method {config.method!r}; known: {sorted(OBJECTIVES)}")
  need(config.model.name in MODELS, f"unknown model name {config.model.name!r}; known: {sorted(MODELS)}")
  need(config.data.name in DATASETS, f"unknown data set {config.data.name!r}; known: {sorted(DATASETS)}")
  tr, ev, op, pa = config.train, config.eval, config.optim, config.param
  need(op.name in ("adam", "radam"), f"unknown optimizer {op.name!r}; known: 'adam', 'radam'")
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
  if tr.init_workdir and config.method in ("cd", "scd"):
    need(not config[config.method].init_from_teacher, f"train.init_workdir and "
         f"{config.method}.init_from_teacher both set the initial weights; choose one")
  need(tr.ema_rampup_ratio == 0 or tr.ema_halflife_kimg > 0,
       "train.ema_rampup_ratio needs train.ema_halflife_kimg > 0 (it ramps up the half-life)")
  need(ev.batch_size > 0 and ev.batch_size % num_devices == 0,
       f"eval.batch_size {ev.batch_size} must be positive and divisible by the number of devices ({num_devices})")
  need(0.0 <= tr.ema_rate < 1.0, f"train.ema_rate must be in [0, 1), got {tr.ema_rate}")
  need(tr.checkpoint_every > 0, f"train.checkpoint_every must be positive, got {tr.checkpoint_every}")
  need(tr.log_every > 0, f"train.log_every must be positive, got {tr.log_every}")
  need(tr.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {tr.keep_checkpoints}")
  toy = config.data.name.startswith("toy2d_")
  if toy:
    need(ev.num_samples >= 256, f"eval.num_samples must be >= 256 for the 2-D metrics, got {ev.num_samples}")
  elif config.data.name == "digits":
    need(ev.num_samples >= 1000, f"eval.num_samples must be >= 1000 for digits-FD, got {ev.num_samples}")
  from cmjax.data import check_data_config
  check_data_config(config)
  need(0 < pa.sigma_min < pa.sigma_max, f"need 0 < param.sigma_min < param.sigma_max, got "
       f"{pa.sigma_min}, {pa.sigma_max}")
  need(pa.sigma_data > 0, f"param.sigma_data must be positive, got {pa.sigma_data}")
  if config.method in ("sct", "scd"):
    need(0 < ev.t_mid < math.pi / 2, f"eval.t_mid {ev.t_mid} is a TrigFlow time for {config.method}: "
         f"it must lie in (0, pi/2)")
  else:
    need(pa.sigma_min < ev.t_mid < pa.sigma_max,
         f"eval.t_mid {ev.t_mid} must lie in (sigma_min, sigma_max) = ({pa.sigma_min}, {pa.sigma_max})")
  need(ev.ode_steps >= 1, f"eval.ode_steps must be >= 1, got {ev.ode_steps}")
  need(ev.ode_solver in ("heun", "euler"), f"unknown eval.ode_solver {ev.ode_solver!r}; known: 'heun', 'euler'")
  _check_model(config, need)
  _check_method(config, need)


def _check_model(config, need) -> None:
  from cmjax import config_base
  from cmjax.models import model_fields

  m, base = config.model, config_base.get_config().model
  fields = model_fields(m.name)
  for key in m.keys():
    if key != "name" and key not in fields:
      need(m[key] == base[key], f"model.{key} is not an argument of model {m.name!r} "
           f"(it takes {sorted(fields)})")
  need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
  if m.label_dim:
    from cmjax.data import num_classes
    need("label_dim" in fields, f"model {m.name!r} cannot be class-conditional (model.label_dim="
         f"{m.label_dim})")
    classes = num_classes(config)
    need(classes == m.label_dim, f"model.label_dim={m.label_dim} but data {config.data.name} has "
         f"{classes} classes" + (" (no labels)" if not classes else ""))
  if m.name == "unet":
    need(m.channels > 0 and m.channels % m.groups == 0,
         f"model.channels {m.channels} must be a positive multiple of model.groups {m.groups}")
  need(m.name == "mlp" or not config.data.name.startswith("toy2d_"),
       f"data {config.data.name} is 2-D points: it needs model.name='mlp', not {m.name!r}")
  if m.name == "mlp":
    need(m.hidden > 0 and m.depth >= 1, f"model.hidden and model.depth must be positive, got "
         f"{m.hidden}, {m.depth}")


def _check_method(config, need) -> None:
  """Per-method hyperparameter checks (only the section of config.method is read)."""
  method = config.method
  s = config[method]
  if "p_std" in s:
    need(s.p_std > 0, f"{method}.p_std must be positive, got {s.p_std}")
  if "distance" in s:
    from cmjax.objectives.common import DISTANCE_NAMES
    need(s.distance in DISTANCE_NAMES, f"unknown {method}.distance {s.distance!r}; known: {DISTANCE_NAMES}")
    need(s.c >= 0, f"{method}.c must be >= 0, got {s.c}")
    if s.distance == "lpips":
      need(not config.data.name.startswith("toy2d_"), f"{method}.distance 'lpips' needs images, "
           f"not {config.data.name}")
      need(bool(s.lpips_weights), f"{method}.distance is 'lpips' but {method}.lpips_weights is empty "
           f"(convert weights with scripts/convert_lpips_weights.py)")
      need(os.path.isfile(s.lpips_weights), f"{method}.lpips_weights: no such file {s.lpips_weights!r}")
      need(s.lpips_resize >= 0, f"{method}.lpips_resize must be >= 0, got {s.lpips_resize}")
  if method == "ect":
    need(s.q > 1, f"ect.q must be > 1, got {s.q}")
    need(s.stage_steps > 0, f"ect.stage_steps must be positive, got {s.stage_steps}")
    need(s.initial_exponent >= 0, f"ect.initial_exponent must be >= 0, got {s.initial_exponent}")
    need(s.c >= 0, f"ect.c must be >= 0, got {s.c}")
    need(s.weighting in ("inv_dt", "snr_plus"), f"unknown ect.weighting {s.weighting!r}")
  elif method == "cd":
    if s.exact_teacher:
      need(config.data.name == "toy2d_gmm8", f"cd.exact_teacher needs data toy2d_gmm8 (the mixture "
           f"whose denoiser is known), not {config.data.name}")
      need(not s.init_from_teacher and not s.teacher_workdir,
           "cd.exact_teacher has no teacher weights: set cd.init_from_teacher=False and leave "
           "cd.teacher_workdir empty")
    need(s.num_scales >= 2, f"cd.num_scales must be >= 2, got {s.num_scales}")
    need(s.solver in ("heun", "euler"), f"unknown cd.solver {s.solver!r}; known: 'heun', 'euler'")
    need(0.0 <= s.mu < 1.0, f"cd.mu must be in [0, 1), got {s.mu}")
  elif method in ("ct", "ict"):
    need(1 <= s.s0 <= s.s1, f"{method}.s0 and s1 must satisfy 1 <= s0 <= s1, got {s.s0}, {s.s1}")
    need(s.total_steps > 0, f"{method}.total_steps must be positive, got {s.total_steps}")
    if method == "ct":
      need(0.0 < s.mu0 < 1.0, f"ct.mu0 must be in (0, 1), got {s.mu0}")
      need(s.mu_divisor in ("paper", "official"),
           f"unknown ct.mu_divisor {s.mu_divisor!r}; known: 'paper', 'official'")
      need(s.s0 >= 2 or s.mu_divisor == "paper",
           "ct.s0 must be >= 2 with mu_divisor 'official' (it divides by N(k) - 1)")
    else:
      need(s.c_per_sqrt_dim >= 0, f"ict.c_per_sqrt_dim must be >= 0, got {s.c_per_sqrt_dim}")
  elif method in ("sct", "scd"):
    need(s.tangent_warmup_steps >= 0, f"{method}.tangent_warmup_steps must be >= 0")
    need(0 < s.t_min < math.pi / 2, f"{method}.t_min must be in (0, pi/2), got {s.t_min}")


def check_resume_compatible(saved: dict, config, workdir: str, allowed: Iterable[str]) -> None:
  """Refuses to resume when the checkpoint's config differs outside the `allowed` fields."""
  a, b = flatten(saved), flatten(config_to_json_dict(config))
  diffs = [k for k in sorted(set(a) | set(b)) if k not in allowed and a.get(k) != b.get(k)]
  if diffs:
    shown = "; ".join(f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}" for k in diffs[:3])
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise ConfigError(f"workdir {workdir} holds a checkpoint from a different config ({shown}{more}); "
                      f"use a new --workdir")
