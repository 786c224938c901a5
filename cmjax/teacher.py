"""Loading the frozen teacher of a distillation run (CD: an 'edm' run; sCD: a 'trigflow' run).

The official CM code silently distils from a randomly initialised teacher when the path is
wrong. Here every problem stops the launch with one line, before anything is compiled:
no teacher_workdir configured, no checkpoint there, a teacher trained with another method,
on other data, or with another sigma_data, or (when the student starts from the teacher's
weights) a different backbone.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax

from cmjax import checkpointing
from cmjax.builders import COMPUTE_DTYPES
from cmjax.config_validation import config_to_json_dict, flatten, saved_config
from cmjax.data import image_shape
from cmjax.errors import ConfigError
from cmjax.models import build_model, num_classes
from cmjax.objectives import build_objective
from cmjax.parallel import replicated
from cmjax.parametrization import ConsistencyPreconditioner, make_model_fn
from cmjax.weights.edm_pickle import make_model
from cmjax.weights.files import check_same_backbone, load_network_file
from cmjax.train_state import build_optimizer, init_train_state


@dataclasses.dataclass
class Teacher:
  """fn(params, x (B, ...), t (B,), labels=None) -> (B, ...) in eval mode (a denoiser D for
  'edm', F for 'trigflow'; labels (B,) for a class-conditional teacher); params: the teacher's EMA parameters; config: its run config; step: its step."""
  fn: Callable
  params: Any
  config: Any
  step: int
  source: dict = dataclasses.field(default_factory=dict)  # what summary.json records


def _restore_run(workdir: str, what: str, field: str, mesh):
  """(config, EMA params, step, model, objective) of the newest checkpoint of the run in
  `workdir`; `what`/`field` name it in the one-line errors ('teacher', 'cd.teacher_workdir')."""
  ckpt_dir = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise ConfigError(f"{what} checkpoint not found: {ckpt_dir} does not exist ({field}={workdir!r})")
  ck = checkpointing.Checkpointer(ckpt_dir)
  try:
    step = ck.latest_step()
    if step is None:
      raise ConfigError(f"{what} checkpoint not found: no complete checkpoint in {ckpt_dir}")
    try:
      tcfg = saved_config(ck.read_config(step))
    except Exception as e:  # noqa: BLE001 - a missing or damaged config item
      raise ConfigError(_unreadable(what, step, ckpt_dir, field, e)) from None
    model = build_model(tcfg.model)
    t_obj = build_objective(tcfg)
    optimizer = build_optimizer(tcfg.optim)
    shape = image_shape(tcfg)
    # Only the EMA parameters are read (`restore_fields`): not the optimiser state, nor the
    # frozen parameters (a CD student's teacher, LPIPS) a run may hold, whose shapes it then
    # needs no more.
    init = lambda k: init_train_state(model, optimizer, k, shape, t_obj,  # noqa: E731
                                      num_classes=num_classes(tcfg.model),
                                      num_times=t_obj.family.num_times)
    abstract = jax.eval_shape(init, jax.random.key(0)).ema_params
    rep = replicated(mesh)
    target = {"ema_params": checkpointing.abstract_with_shardings(
        abstract, jax.tree.map(lambda _: rep, abstract))}
    try:
      fields, _ = ck.restore_fields(step, target)
    except ConfigError:  # a checksum or structure mismatch names itself
      raise
    except Exception as e:  # noqa: BLE001 - truncated or missing files
      raise ConfigError(_unreadable(what, step, ckpt_dir, field, e)) from None
  finally:
    ck.close()
  return tcfg, fields["ema_params"], int(step), model, t_obj


def _unreadable(what: str, step: int, ckpt_dir: str, field: str, e: Exception) -> str:
  """The one line for a checkpoint of another run that cannot be read (it is never moved)."""
  return (f"{what} checkpoint {step} in {ckpt_dir} cannot be read ({type(e).__name__}: "
          f"{' '.join(str(e).split())[:150]}); nothing was changed ({field})")


def _check_same(tcfg, config, keys, what: str, workdir: str) -> None:
  for key in keys:
    a, b = flatten(tcfg.to_dict()).get(key), flatten(config.to_dict()).get(key)
    if a != b:
      raise ConfigError(f"{what} in {workdir} has {key}={a!r} but this run has {b!r}")


# Regularisation may differ between the run that trained the weights and the one that starts from
# them (the CM paper's CD student has dropout 0, its EDM teacher 0.13); the weights do not.
_WEIGHT_FREE_MODEL_FIELDS = ("dropout", "label_dropout", "dropout_max_res")


def _check_same_model(tcfg, config, why: str) -> None:
  """The two runs' backbones have the same parameters (all model fields equal except dropout)."""
  drop = lambda d: {k: v for k, v in d.items() if k not in _WEIGHT_FREE_MODEL_FIELDS}  # noqa: E731
  t_model, s_model = drop(config_to_json_dict(tcfg.model)), drop(config_to_json_dict(config.model))
  if t_model != s_model:
    diff = {k: (t_model.get(k), s_model.get(k)) for k in sorted(set(t_model) | set(s_model))
            if t_model.get(k) != s_model.get(k)}
    raise ConfigError(f"{why} needs the same backbone, but model differs (that run, this run): {diff}")


def load_init_params(config, mesh) -> tuple[Any, int]:
  """(EMA params, step) of the run in config.train.init_workdir: a run starts from them (ECT tunes
  a pretrained EDM model; sCT may start from a TrigFlow model). The backbone, data set and
  sigma_data must match; any method may have trained it. One-line ConfigError otherwise."""
  workdir = config.train.init_workdir
  tcfg, params, step, _, _ = _restore_run(workdir, "initial-weights", "train.init_workdir", mesh)
  _check_same(tcfg, config, ("data.name", "param.sigma_data"), "the run", workdir)
  _check_same_model(tcfg, config, f"train.init_workdir={workdir!r}")
  return params, step


def load_teacher(config, objective, mesh) -> Teacher:
  """Reads the teacher named by config.<method>.teacher_workdir (newest checkpoint, EMA params).

  Raises ConfigError (one line) for every problem listed in the module docstring.
  """
  method, need = config.method, objective.teacher_method
  if config[method].get("teacher_file"):
    return teacher_from_file(config, objective, mesh)
  workdir = config[method].teacher_workdir
  if not workdir:
    raise ConfigError(f"{method}.teacher_workdir is empty: {method} distils a trained '{need}' "
                      f"teacher; train one (method='{need}') and pass its workdir")
  tcfg, params, step, model, t_obj = _restore_run(workdir, "teacher", f"{method}.teacher_workdir",
                                                  mesh)
  if tcfg.method != need:
    raise ConfigError(f"teacher in {workdir} was trained with method '{tcfg.method}'; "
                      f"{method} needs a '{need}' teacher")
  _check_same(tcfg, config, ("data.name", "param.sigma_data", "model.label_dim"), "teacher", workdir)
  if config[method].init_from_teacher:
    _check_same_model(tcfg, config, f"{method}.init_from_teacher")
  precond = t_obj.family.preconditioner(tcfg.param)
  model_fn = make_model_fn(model, precond, COMPUTE_DTYPES[config.train.precision])
  fn = lambda params, x, t, labels=None: model_fn(params, x, t, labels=labels)
  return Teacher(fn=fn, params=params, config=tcfg, step=step,
                 source={"workdir": os.path.abspath(workdir), "step": step})


def _file_sigma_data(net) -> float | None:
  return getattr(net.precond, "sigma_data", None)


def teacher_from_file(config, objective, mesh) -> Teacher:
  """The teacher in config.<method>.teacher_file: a published EDM network pickle (its EMA network)
  with the preconditioning recorded in it (EDM, VP or VE: a denoiser D(x; sigma)), or one of
  OpenAI's EDM teachers (edm_imagenet64_ema.pt, edm_bedroom256_ema.pt; CM's c_noise). One-line
  WeightsFileError / ConfigError when it is not a denoiser of this run's images and classes."""
  method = config.method
  field = f"{method}.teacher_file"
  path = config[method].teacher_file
  if objective.teacher_method != "edm":
    raise ConfigError(f"{field}: {method} needs a '{objective.teacher_method}' teacher; network files "
                      f"hold EDM-time denoisers")
  net = load_network_file(path, field)
  if isinstance(net.precond, ConsistencyPreconditioner):
    raise ConfigError(f"{field}: {path} holds a consistency model (ECMPrecond), not a denoiser")
  shape = image_shape(config)
  file_shape = _file_image_shape(net)
  if tuple(shape) != file_shape:
    raise ConfigError(f"{field}: the file's network makes {file_shape} images, the data "
                      f"{config.data.name} has {tuple(shape)}")
  if int(net.model_kwargs.get("label_dim", 0)) != num_classes(config.model):
    raise ConfigError(f"{field}: the file's network has label_dim={net.model_kwargs.get('label_dim', 0)}, "
                      f"this run's model.label_dim={num_classes(config.model)}")
  if config[method].init_from_teacher:
    check_same_backbone(net, config.model, f"{method}.init_from_teacher with {field}")
  model = make_model(net.model_kwargs)
  model_fn = make_model_fn(model, net.precond, COMPUTE_DTYPES[config.train.precision])
  fn = lambda params, x, t, labels=None: model_fn(params, x, t, labels=labels)
  params = jax.device_put(net.params, replicated(mesh))
  source = {"file": os.path.abspath(path),
            "precond": getattr(net.read, "precond_class", type(net.precond).__name__)}
  if getattr(net.read, "source_sha256", None):  # EDM pickles: the embedded source's hash
    source["sha256"] = net.read.source_sha256
  return Teacher(fn=fn, params=params, config=None, step=0, source=source)


def _file_image_shape(net) -> tuple:
  """(H, W, C) of the images a network file's model makes: EDM pickles record img_resolution /
  img_channels with their preconditioner; OpenAI's files their image_size and in_channels (.pt)
  or num_channels (consistency_models_cifar10)."""
  cfg = getattr(net.read, "precond_config", None)
  if cfg is not None:
    return (int(cfg.get("img_resolution", -1)),) * 2 + (int(cfg.get("img_channels", -1)),)
  arch = getattr(net.read, "arch", {})
  channels = arch.get("in_channels", arch.get("num_channels", -1))
  return (int(arch.get("image_size", -1)),) * 2 + (int(channels),)


def load_init_file(config, mesh):
  """The parameters of the network in config.train.init_from (its EMA copy), checked against
  config.model (same backbone; dropout may differ) and config.param.sigma_data."""
  path = config.train.init_from
  net = load_network_file(path, "train.init_from")
  check_same_backbone(net, config.model, "train.init_from")
  sd = _file_sigma_data(net)
  if sd is not None and abs(sd - config.param.sigma_data) > 1e-9:
    raise ConfigError(f"train.init_from: the file's network has sigma_data={sd}, this run's "
                      f"param.sigma_data={config.param.sigma_data}")
  return jax.device_put(net.params, replicated(mesh))
