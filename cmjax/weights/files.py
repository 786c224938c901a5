"""A published network file, wherever a run takes weights: `train.init_from` (start training from
its weights, as ECT's `--transfer` tunes EDM's released model), `cd.teacher_file` (a CD teacher with
its own preconditioning), and `sample.weights` / `eval.weights` (sample or evaluate it directly).

`load_network_file(path)` chooses the reader by what the file is (EDM / ECT network pickles,
`cmjax.weights.edm_pickle`; OpenAI's consistency-model checkpoints, `cmjax.weights.openai_cm`); `check_same_backbone` compares the file's network with config.model.
Every problem is one `WeightsFileError` (a ConfigError) line.
"""
from __future__ import annotations

import os

from cmjax.errors import WeightsFileError
from cmjax.models import model_fields
from cmjax.weights.edm_pickle import ImportedNetwork, load_edm_network
from cmjax.weights.openai_cm import load_openai_cm

# Regularisation may differ between the network in the file and the one a run trains.
WEIGHT_FREE_FIELDS = ("dropout", "label_dropout", "dropout_max_res")


def load_network_file(path: str, what: str = "weights") -> ImportedNetwork:
  """The network in `path` (its EMA copy for an EDM-format pickle): model kwargs, params,
  preconditioner. `what` names the config field in errors."""
  if not path or not os.path.isfile(path):
    raise WeightsFileError(f"{what}: no such file {path!r}")
  if path.endswith(".pkl"):
    return load_edm_network(path)
  if path.endswith((".pt", ".msgpack")):  # OpenAI's consistency_models / _cifar10 checkpoints
    # their released teachers are named edm_*: EDM scalings (a denoiser), the others CM's boundary
    return load_openai_cm(path, boundary=not os.path.basename(path).startswith("edm_"))
  raise WeightsFileError(f"{what}: {path} is not a known network file (EDM/ECT network pickles "
                         f".pkl, OpenAI consistency-model .pt / .msgpack)")


def check_same_backbone(net: ImportedNetwork, model_config, what: str) -> None:
  """The file's backbone is the one config.model builds (all arguments equal except the
  regularisation fields): one line naming the first difference otherwise."""
  kw = net.model_kwargs
  if kw["name"] != model_config.name:
    raise WeightsFileError(f"{what}: the file holds a '{kw['name']}' network but model.name is "
                           f"'{model_config.name}'")
  fields = model_fields(kw["name"])
  for field, default in fields.items():
    if field in WEIGHT_FREE_FIELDS or field in ("fourier_seed", "fourier_scale"):
      continue
    want = kw.get(field, default)
    have = model_config.get(field, default)
    norm = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    if field == "fourier_freqs" and want is not None and have is None:
      raise WeightsFileError(f"{what}: the file's NCSN++ keeps its own Fourier frequencies; set "
                             f"model.fourier_freqs to them (see docs/weights.md) to train this "
                             f"network")
    if norm(want) != norm(have):
      raise WeightsFileError(f"{what}: the file's network has model.{field}={norm(want)!r} but the "
                             f"config has {norm(have)!r}")
