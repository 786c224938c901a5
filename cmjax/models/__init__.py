"""Backbone networks, chosen by name in `config.model.name`; `config.model` holds that network's
constructor arguments and nothing else (as big_vision builds `Model(**config.model)`).

Networks are discovered: every module of this package that defines `BACKBONES = {name: class}`
registers them, so a new network is one new file. Every backbone is a linen module called as
  model.apply({'params': p}, x (B, ...), c_noise (B,), train=bool, rngs={'dropout': k},
              [class_labels=(B,) ints], [c_noise_2=(B,)])
and knows nothing of noise levels (the family's preconditioner wraps it).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil

import ml_collections

from cmjax.errors import ConfigError


def _discover() -> dict:
  found = {}
  for info in pkgutil.iter_modules(__path__):
    module = importlib.import_module(f"{__name__}.{info.name}")
    for name, cls in getattr(module, "BACKBONES", {}).items():
      if name in found:
        raise RuntimeError(f"two backbones named {name!r}")
      found[name] = cls
  return dict(sorted(found.items()))


MODELS = _discover()


def model_fields(name: str) -> dict:
  """{argument: default} of backbone `name`'s constructor (its dataclass fields)."""
  if name not in MODELS:
    raise ConfigError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
  out = {}
  for f in dataclasses.fields(MODELS[name]):
    if f.name in ("parent", "name") or not f.init:
      continue
    out[f.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()
  return out


def buffer_mask(model_config):
  """For a backbone that stores fixed buffers among its 'params' (its class attribute
  `buffer_leaves`: leaf names, e.g. EDM2's MPFourier 'freqs' and 'phases'), a function
  tree -> tree of bools, True at those leaves (matched by the last key of the path, so it works
  on the (params, aux_params) pair too); None for every other backbone. The optimiser zeroes
  their updates (`build_optimizer(frozen=...)`), so weight decay never moves them."""
  names = tuple(getattr(MODELS.get(model_config.name), "buffer_leaves", ()))
  if not names:
    return None
  import jax
  return lambda tree: jax.tree_util.tree_map_with_path(
      lambda path, _: getattr(path[-1], "key", None) in names, tree)


def model_config(name: str, **overrides) -> ml_collections.ConfigDict:
  """The `config.model` section of backbone `name`: its name and every constructor argument at
  its default, with `overrides` applied (an argument the network does not take is a ConfigError)."""
  fields = model_fields(name)
  unknown = sorted(set(overrides) - set(fields))
  if unknown:
    raise ConfigError(f"model {name!r} does not take {unknown}; it takes {sorted(fields)}")
  section = {"name": name, **fields, **overrides}
  return ml_collections.ConfigDict({k: tuple(v) if isinstance(v, list) else v
                                    for k, v in section.items()})


def build_model(model_config):
  """The linen backbone named by `model_config.name`, built from the other fields (each must be
  an argument of that network: one-line ConfigError otherwise)."""
  kwargs = dict(model_config)
  name = kwargs.pop("name")
  fields = model_fields(name)
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ConfigError(f"model.{unknown[0]} is not an argument of model {name!r} (it takes "
                      f"{sorted(fields)})")
  return MODELS[name](**kwargs)


def num_classes(model_config) -> int:
  """model.label_dim, or 0 for a network without labels."""
  return int(model_config.get("label_dim", 0))
