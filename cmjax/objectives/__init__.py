"""Training objectives, chosen by name in `config.method`.

Every objective has one signature (see cmjax/objectives/common.py):
  objective(model_fn, params, x (B, ...), keys (B,), step, extra=None) -> (loss (B,), metrics {name: (B,)})
so that methods are compared on equal terms and train steps are method-agnostic. Each names its
model family (`objective.family`, see `cmjax.families`): preconditioner, samplers, time axis.

  edm       EDM diffusion pretraining (the teacher of CD)           Karras et al. 2022
  cd        consistency distillation                                  Song et al. 2023
  ct        consistency training                                      Song et al. 2023
  ict       improved consistency training                             Song & Dhariwal 2023
  ect       easy consistency tuning                                   Geng et al. 2024
  sct, scd  continuous-time consistency training / distillation      Lu & Song 2024
  trigflow  TrigFlow diffusion pretraining (the teacher of sCD)      Lu & Song 2024
  fm        flow matching / rectified flow (a diffusion teacher)     Lipman et al. 2023; Liu et al. 2023
  meanflow  MeanFlow: average velocity by one jvp                     Geng et al. 2025
  shortcut  shortcut models: flow matching + self-consistency        Frans et al. 2025

Objectives are discovered: every module of this package that defines `METHODS = {name: class}`
registers them (and `SETUP_FIELDS = {name: {field: default}}` for config-only settings such as a
teacher's workdir, read by `cmjax.run` and never passed to the objective). A new objective is
one new file here plus its config.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import pkgutil

from cmjax.errors import ConfigError


def _discover():
  methods, setup = {}, {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    for name, cls in getattr(module, "METHODS", {}).items():
      if name in methods:
        raise RuntimeError(f"two objectives named {name!r}")
      methods[name] = cls
    setup.update(getattr(module, "SETUP_FIELDS", {}))
  return dict(sorted(methods.items())), setup


OBJECTIVES, SETUP_FIELDS = _discover()
# Fields an objective takes from config.param instead of its own section.
PARAM_FIELDS = ("sigma_data", "sigma_min", "sigma_max")


def objective_class(method: str):
  """The dataclass behind `OBJECTIVES[method]` (unwrapping a functools.partial)."""
  cls = OBJECTIVES[method]
  return cls.func if isinstance(cls, functools.partial) else cls


def objective_fields(method: str) -> dict:
  """{field: default} of the config section of `method`: the objective's dataclass fields that a
  config sets (not those from config.param, not those fixed by the registry, not callables set at
  run time), then its config-only SETUP_FIELDS."""
  entry, cls = OBJECTIVES[method], objective_class(method)
  fixed = set(entry.keywords) if isinstance(entry, functools.partial) else set()
  out = {}
  for f in dataclasses.fields(cls):
    if f.name in PARAM_FIELDS or f.name in fixed or not f.compare or not f.init:
      continue
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    out[f.name] = default
  out.update(SETUP_FIELDS.get(method, {}))
  return out


def build_objective(config):
  """Builds the objective named by `config.method` from `config.<method>` and `config.param`
  (config-only SETUP_FIELDS are left out: `cmjax.run` reads them)."""
  method = config.method
  if method not in OBJECTIVES:
    raise ConfigError(f"unknown method {method!r}; known: {sorted(OBJECTIVES)}")
  setup = SETUP_FIELDS.get(method, {})
  kwargs = {k: v for k, v in dict(config[method]).items() if k not in setup}
  fields = {f.name for f in dataclasses.fields(objective_class(method))}
  for name in PARAM_FIELDS:
    if name in fields:
      kwargs[name] = config.param[name]
  try:
    return OBJECTIVES[method](**kwargs)
  except ValueError as e:  # an objective's own check (__post_init__)
    raise ConfigError(f"{method}.{e}") from None
