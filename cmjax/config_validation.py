"""Config checks that run before anything is compiled. Each failure is one clear line."""
from __future__ import annotations

import json
from typing import Any, Iterable


class ConfigError(ValueError):
  """A config problem; its message is one line naming the problem."""


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
  need(ev.batch_size > 0 and ev.batch_size % num_devices == 0,
       f"eval.batch_size {ev.batch_size} must be positive and divisible by the number of devices ({num_devices})")
  need(0.0 <= tr.ema_rate < 1.0, f"train.ema_rate must be in [0, 1), got {tr.ema_rate}")
  need(tr.checkpoint_every > 0, f"train.checkpoint_every must be positive, got {tr.checkpoint_every}")
  need(tr.log_every > 0, f"train.log_every must be positive, got {tr.log_every}")
  need(tr.keep_checkpoints >= 1, f"train.keep_checkpoints must be >= 1, got {tr.keep_checkpoints}")
  need(ev.num_samples >= 1000, f"eval.num_samples must be >= 1000 for digits-FD, got {ev.num_samples}")
  need(0 < pa.sigma_min < pa.sigma_max, f"need 0 < param.sigma_min < param.sigma_max, got "
       f"{pa.sigma_min}, {pa.sigma_max}")
  need(pa.sigma_min < ev.t_mid < pa.sigma_max,
       f"eval.t_mid {ev.t_mid} must lie in (sigma_min, sigma_max) = ({pa.sigma_min}, {pa.sigma_max})")
  m = config.model
  need(m.channels > 0 and m.channels % m.groups == 0,
       f"model.channels {m.channels} must be a positive multiple of model.groups {m.groups}")
  need(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
  if config.method == "ect":
    e = config.ect
    need(e.q > 1, f"ect.q must be > 1, got {e.q}")
    need(e.stage_steps > 0, f"ect.stage_steps must be positive, got {e.stage_steps}")
    need(e.initial_exponent >= 0, f"ect.initial_exponent must be >= 0, got {e.initial_exponent}")
    need(e.c >= 0, f"ect.c must be >= 0, got {e.c}")
    need(e.weighting in ("inv_dt", "snr_plus"), f"unknown ect.weighting {e.weighting!r}")


def check_resume_compatible(saved: dict, config, workdir: str, allowed: Iterable[str]) -> None:
  """Refuses to resume when the checkpoint's config differs outside the `allowed` fields."""
  a, b = flatten(saved), flatten(config_to_json_dict(config))
  diffs = [k for k in sorted(set(a) | set(b)) if k not in allowed and a.get(k) != b.get(k)]
  if diffs:
    shown = "; ".join(f"{k}: checkpoint {a.get(k)!r} vs now {b.get(k)!r}" for k in diffs[:3])
    more = f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise ConfigError(f"workdir {workdir} holds a checkpoint from a different config ({shown}{more}); "
                      f"use a new --workdir")
