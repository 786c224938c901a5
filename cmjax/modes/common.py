"""What the inference modes share: a built config, its sampler, and a trained run's parameters
restored from its workdir's checkpoint alone."""
from __future__ import annotations

import dataclasses
import os

import jax

from cmjax import checkpointing, parallel
from cmjax.builders import build
from cmjax.config_validation import check_resume_compatible
from cmjax.errors import ConfigError
from cmjax.families.edm_time import EDM_CONSISTENCY, EDM_DIFFUSION
from cmjax.parametrization import ConsistencyPreconditioner, make_model_fn
from cmjax.latent_vae import latent_decoder
from cmjax.sampler import Sampler
from cmjax.weights.files import check_same_backbone, load_network_file


def restore_params(built, workdir: str, step: int = -1, which: str = "ema"):
  """(step, params) of a trained run: the newest readable checkpoint (step = -1) or `step`.

  built: `cmjax.builders.build(config)`. which: 'ema' (the EMA copy, what the papers sample from)
  or 'raw' (the online parameters); only that copy is read from the checkpoint, not the optimiser
  state, the other copy or a teacher (`Checkpointer.restore_fields`). Raises ConfigError (one
  line) when the workdir has no checkpoint, not that step, or one from a different config
  (inference-only fields may differ).
  """
  if which not in ("ema", "raw"):
    raise ConfigError(f"params must be 'ema' or 'raw', not {which!r}")
  config = built.config
  workdir = os.path.abspath(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f"no checkpoint in {ckpt_dir}: train first (--mode train)")
  ckpt = checkpointing.Checkpointer(ckpt_dir)
  try:
    steps = ckpt.all_steps()
    if not steps:
      raise ConfigError(f"no checkpoint in {ckpt.directory}: train first (--mode train)")
    if step >= 0 and step not in steps:
      raise ConfigError(f"no checkpoint {step} in {ckpt.directory}; there are {list(steps)}")
    check = lambda saved: check_resume_compatible(saved, config, workdir)
    field = "ema_params" if which == "ema" else "params"
    abstract = built.abstract_state()  # the backbone's shapes do not depend on a teacher
    target = {field: checkpointing.abstract_with_shardings(
        getattr(abstract, field), getattr(built.state_sharding(abstract), field))}
    if step >= 0:  # exactly this one: never set aside or fall back
      check(ckpt.read_config(step))
      try:
        found = (step, ckpt.restore_fields(step, target)[0], None)
      except ConfigError:  # a checksum or shape mismatch says what it is
        raise
      except Exception as e:  # noqa: BLE001 - any read failure
        raise ConfigError(f"checkpoint {step} in {ckpt.directory} cannot be read "
                          f"({type(e).__name__})") from e
    else:
      found = ckpt.restore_newest(target, check, fields_only=True)
  finally:
    ckpt.close()
  if found is None:
    raise ConfigError(f"no readable checkpoint in {ckpt.directory}")
  got, fields, _ = found
  return got, fields[field]


def imported_network(built, path: str, field: str):
  """(built with the file's preconditioning, its params) for a published network file
  (`cmjax.weights.files`): the backbone must be config.model's, the family must be the file's
  kind of model (a denoiser: 'edm'; ECT's ECMPrecond: a consistency method), sigma_data equal."""
  config = built.config
  net = load_network_file(path, field)
  check_same_backbone(net, config.model, field)
  consistency = isinstance(net.precond, ConsistencyPreconditioner)
  if built.family is not (EDM_CONSISTENCY if consistency else EDM_DIFFUSION):
    kind = "a consistency model (ECMPrecond)" if consistency else "an EDM-time denoiser"
    raise ConfigError(f"{field}: {path} holds {kind}; method '{config.method}' trains family "
                      f"{built.family.name} (use method '{'ect' if consistency else 'edm'}')")
  sd = getattr(net.precond, "sigma_data", None)
  if sd is not None and abs(sd - config.param.sigma_data) > 1e-9:
    raise ConfigError(f"{field}: the file's network has sigma_data={sd}, the config "
                      f"param.sigma_data={config.param.sigma_data}")
  built = dataclasses.replace(built, precond=net.precond,
                              model_fn=make_model_fn(built.model, net.precond, built.compute_dtype))
  return built, jax.device_put(net.params, parallel.replicated(built.mesh))


def inference_setup(config, workdir: str, step: int = -1, which: str = "ema", weights: str = "",
                    field: str = "weights"):
  """(built, sampler, step, params) for an inference mode: the config built purely and the
  parameters restored from the workdir's checkpoint, or taken from the published network file
  `weights` (then step is -1: no checkpoint). A latent model's sampler decodes to pixels with the
  VAE of data.vae_weights (`cmjax.latent_vae`)."""
  built = build(config)
  if weights:
    built, params = imported_network(built, weights, field)
    return built, Sampler(built, latent_decoder(config, built.mesh)), -1, params
  got, params = restore_params(built, workdir, step, which)
  return built, Sampler(built, latent_decoder(config, built.mesh)), got, params
