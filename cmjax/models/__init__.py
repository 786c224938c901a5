"""Backbone networks, chosen by name in `config.model.name`."""
from __future__ import annotations

import dataclasses

from cmjax.models.adm_unet import ADMUNet
from cmjax.models.mlp import MLP
from cmjax.models.song_unet import SongUNet
from cmjax.models.unet import UNet

MODELS = {"unet": UNet, "mlp": MLP, "song_unet": SongUNet, "adm": ADMUNet}


def model_fields(name: str) -> set[str]:
  """The constructor arguments of backbone `name` (config.model holds the union over models)."""
  return {f.name for f in dataclasses.fields(MODELS[name])} - {"parent", "name"}


def build_model(model_config):
  """Returns the linen backbone named by `model_config.name`, built from the fields it takes.

  config.model holds every model's fields; the others are ignored here, and
  `config_validation` rejects a config that changes a field its model does not take.
  """
  kwargs = dict(model_config)
  name = kwargs.pop("name")
  if name not in MODELS:
    raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
  fields = model_fields(name)
  return MODELS[name](**{k: v for k, v in kwargs.items() if k in fields})
