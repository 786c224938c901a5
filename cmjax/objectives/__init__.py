"""Training objectives, chosen by name in `config.method`.

Every objective has one signature (see cmjax/objectives/common.py):
  objective(model_fn, params, x (B, ...), keys (B,), step, extra=None) -> (loss (B,), metrics {name: (B,)})
so that methods are compared on equal terms and train steps are method-agnostic.

  edm       EDM diffusion pretraining (the teacher of CD)           Karras et al. 2022
  cd        consistency distillation                                  Song et al. 2023
  ct        consistency training                                      Song et al. 2023
  ict       improved consistency training                             Song & Dhariwal 2023
  ect       easy consistency tuning                                   Geng et al. 2024
  sct, scd  continuous-time consistency training / distillation      Lu & Song 2024
  trigflow  TrigFlow diffusion pretraining (the teacher of sCD)      Lu & Song 2024
"""
from __future__ import annotations

import dataclasses
import functools

from cmjax.objectives.cd import CDObjective
from cmjax.objectives.ct import CTObjective
from cmjax.objectives.ect import ECTObjective
from cmjax.objectives.edm import EDMObjective
from cmjax.objectives.ict import ICTObjective
from cmjax.objectives.scm import SCMObjective
from cmjax.objectives.trigflow import TrigFlowObjective

OBJECTIVES = {
    "edm": EDMObjective,
    "cd": CDObjective,
    "ct": CTObjective,
    "ict": ICTObjective,
    "ect": ECTObjective,
    "sct": functools.partial(SCMObjective, distill=False),
    "scd": functools.partial(SCMObjective, distill=True),
    "trigflow": TrigFlowObjective,
}
# Objectives whose model is a diffusion model, sampled with an ODE solver (the others are
# consistency models, sampled in 1 or 2 steps).
DIFFUSION_METHODS = ("edm", "trigflow")


def _objective_class(method: str):
  cls = OBJECTIVES[method]
  return cls.func if isinstance(cls, functools.partial) else cls


def build_objective(config):
  """Builds the objective named by `config.method` from `config.<method>` and `config.param`."""
  method = config.method
  if method not in OBJECTIVES:
    raise ValueError(f"unknown method {method!r}; known: {sorted(OBJECTIVES)}")
  kwargs = dict(config[method])
  fields = {f.name for f in dataclasses.fields(_objective_class(method))}
  for name in ("sigma_data", "sigma_min", "sigma_max"):
    if name in fields:
      kwargs[name] = config.param[name]
  return OBJECTIVES[method](**kwargs)
