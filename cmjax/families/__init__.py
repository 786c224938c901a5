"""Model families: what kind of model an objective trains, in one object.

A family ties together everything that depends on the kind of model rather than on the loss:
  preconditioner(param)            how the backbone becomes the model (`cmjax.parametrization`),
  is_diffusion                     sampled by an ODE solver (True) or in 1-2 consistency steps,
  named_samplers(config)           the samplers a run reports at its end ('1step', '2step' | 'ode'),
  sampler_spec(config, levels)     the sampler of `--mode sample` (levels checked, one-line errors),
  make_sample_fn(spec, fn, param)  fn(params, z, renoise_key, first_index) -> samples for a spec,
  consistency_fn(fn, param, n)     the model's estimate of f*(x, sigma) in EDM coordinates (x =
                                   x0 + sigma z), for the ground-truth errors on 2-D data,
  check_config(config, need)       family-specific config checks (e.g. the range of eval.t_mid).
A spec is a hashable tuple whose first entry names the sampler kind (`spec_kinds`); consistency
samplers take their levels traced, so one compile serves every list of the same length.

Every objective names its family (`objective.family`). Families are discovered: each module of
this package lists its instances in a module-level `FAMILIES` tuple, so a new family is one new
file here.
"""
from __future__ import annotations

import importlib
import pkgutil

from cmjax.families.base import Family

__all__ = ["Family", "FAMILIES", "family_named", "family_of_spec"]


def _discover() -> dict:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    if info.name == "base":
      continue
    module = importlib.import_module(f"{__name__}.{info.name}")
    for fam in getattr(module, "FAMILIES", ()):
      if fam.name in found:
        raise RuntimeError(f"two families named {fam.name!r}")
      found[fam.name] = fam
  return found


FAMILIES = _discover()


def family_named(name: str) -> Family:
  """The family called `name` (e.g. 'edm_consistency')."""
  if name not in FAMILIES:
    raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}")
  return FAMILIES[name]


def family_of_spec(spec: tuple) -> Family:
  """The family that owns sampler spec `spec` (by its kind, spec[0])."""
  for fam in FAMILIES.values():
    if spec[0] in fam.spec_kinds:
      return fam
  raise ValueError(f"unknown sampler spec {spec!r}")
