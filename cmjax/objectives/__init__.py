"""Training objectives, chosen by name in `config.method`.

Every objective has one signature:
  objective(model_fn, params, x (B,H,W,C), keys (B,), step) -> (loss (B,), metrics {name: (B,)})
so that methods are compared on equal terms and train steps are method-agnostic.
"""
from __future__ import annotations

from cmjax.objectives.ect import ECTObjective

OBJECTIVES = {"ect": ECTObjective}


def build_objective(config):
  """Builds the objective named by `config.method` from `config.<method>` and `config.param`."""
  method = config.method
  if method not in OBJECTIVES:
    raise ValueError(f"unknown method {method!r}; known: {sorted(OBJECTIVES)}")
  kwargs = dict(config[method])
  kwargs.update(sigma_data=config.param.sigma_data, sigma_min=config.param.sigma_min,
                sigma_max=config.param.sigma_max)
  return OBJECTIVES[method](**kwargs)
