"""Backbone networks, chosen by name in `config.model.name`."""
from __future__ import annotations

from cmjax.models.unet import UNet

MODELS = {"unet": UNet}


def build_model(model_config):
  """Returns the linen backbone named by `model_config.name`, built from the other fields."""
  kwargs = dict(model_config)
  name = kwargs.pop("name")
  if name not in MODELS:
    raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
  return MODELS[name](**kwargs)
