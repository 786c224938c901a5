"""Pieces every objective shares: per-example randomness, broadcasting, named distances.

Each objective is a small frozen dataclass holding its hyperparameters and called as

  objective(model_fn, params, x, keys, step, extra=None) -> (loss (B,), metrics {name: (B,)})

model_fn(params, x (B, ...), t (B,), dropout_keys (B,) | None) is the preconditioned network
(`parametrization.make_model_fn`); keys are (B,) per-example keys (`train_step.example_keys`),
so every random draw of example i depends on its key only; step is the optimiser step that
drives the curricula; extra holds what some objectives need besides the online parameters:
  extra['target']   theta-, the EMA target network (CT, CD; `target_ema(step)` gives its decay),
  extra['teacher']  a frozen pretrained model's parameters (CD, sCD; `teacher_fn` evaluates it),
  extra['aux']      trainable parameters owned by the objective (sCM's adaptive weight w(t)).
Class attributes tell the trainer what to build:
  family            the model family (`cmjax.families`): preconditioner, samplers, time axis,
  uses_target       keep an EMA target network in the train state,
  teacher_method    the objective name a teacher checkpoint must come from (None: no teacher),
  uses_labels       the objective reads the batch's class labels itself (MeanFlow's guidance
                    evaluates the network on other labels): `condition_on_labels` hands it
                    `labels=` and a model_fn that still takes `labels=`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax

from cmjax import distances, lpips
from cmjax.families.edm_time import EDM_CONSISTENCY
from cmjax.parametrization import bind_labels
from cmjax.arrays import bcast, per_example_dims, repeat_grayscale  # noqa: F401 - re-exported

Array = jax.Array


class ObjectiveBase:
  """Defaults of the objective protocol (see the module docstring)."""
  family = EDM_CONSISTENCY
  uses_target = False
  teacher_method: Optional[str] = None
  uses_labels = False

  def target_ema(self, step: Array) -> Array:
    """Decay mu(k) of the target network theta- <- mu theta- + (1 - mu) theta."""
    raise NotImplementedError(f"{type(self).__name__} keeps no target network")

  def init_aux(self, key: Array) -> dict:
    """Initial trainable parameters owned by the objective ({} for most)."""
    del key
    return {}


def require(cond: bool, msg: str) -> None:
  """An objective's hyperparameter check (in __post_init__): ValueError(msg) unless cond. msg
  starts with the field name, so `build_objective` reports it as '<method>.<msg>'."""
  if not cond:
    raise ValueError(msg)


def check_distance(obj) -> None:
  """Checks of the named-distance fields (distance, c, lpips_resize) of CD and CT."""
  require(obj.distance in DISTANCE_NAMES, f"distance {obj.distance!r} is unknown; known: {DISTANCE_NAMES}")
  require(obj.c >= 0, f"c must be >= 0, got {obj.c}")
  require(obj.lpips_resize >= 0, f"lpips_resize must be >= 0, got {obj.lpips_resize}")


def condition_on_labels(model_fn: Callable, objective, labels: Optional[Array],
                        augment_labels: Optional[Array] = None):
  """(model_fn, objective) conditioned on (B,) class labels and (B, A) augmentation labels
  (None: unchanged).

  The objectives call model_fn(params, x, t[, keys]) and teacher_fn(params, x, t) on the same
  B examples, so binding the batch's labels here makes every method class-conditional
  without a labels argument in each objective (a teacher gets the same class labels). The
  augmentation labels (EDM's pipeline, `cmjax.data.augment`) reach the trained network (and so its
  target network) only; a teacher sees no augmentation labels (zeros, as at sampling).
  An objective with `uses_labels` (MeanFlow's classifier-free guidance folded into the target)
  gets dataclasses.replace(objective, labels=labels) and a model_fn that still takes `labels=`
  (with the augmentation labels bound), so it can evaluate the network on the null class.
  """
  if labels is None and augment_labels is None:
    return model_fn, objective
  if labels is not None and getattr(objective, "uses_labels", False):
    return (bind_labels(model_fn, None, augment_labels),
            dataclasses.replace(objective, labels=labels))
  teacher_fn = getattr(objective, "teacher_fn", None)
  if teacher_fn is not None and labels is not None:
    objective = dataclasses.replace(
        objective, teacher_fn=lambda p, x, t: teacher_fn(p, x, t, labels=labels))
  return bind_labels(model_fn, labels, augment_labels), objective


def split_keys(keys: Array, num: int) -> list[Array]:
  """(B,) keys -> `num` arrays of (B,) keys: independent streams per example."""
  split = jax.vmap(lambda k: jax.random.split(k, num))(keys)
  return [split[:, i] for i in range(num)]


def per_example_normal(keys: Array, shape) -> Array:
  """z_i ~ N(0, I) of `shape` from keys[i]: (B,) keys -> (B, *shape) float32."""
  return jax.vmap(lambda k: jax.random.normal(k, tuple(shape)))(keys)


DISTANCE_NAMES = ("l2_squared", "l2", "l1", "pseudo_huber", "lpips")


def make_distance(name: str, c: float = 0.0, lpips_params=None, lpips_resize: int = 0) -> Callable:
  """The per-example distance d(a, b) -> (B,) named in a config.

  'l2_squared' ||a-b||^2 and 'l1' (CM paper's metrics), 'l2' ||a-b||, 'pseudo_huber'
  sqrt(||a-b||^2 + c^2) - c over the whole example (iCT), 'lpips' (cmjax.lpips; needs its
  parameters, which the trainer loads from `<method>.lpips_weights` and keeps in the train
  state as `distance_params`; grayscale images are repeated to 3 channels and, if
  lpips_resize > 0, both inputs are resized bilinearly to lpips_resize^2 first, as the CM
  code does with 224).
  """
  if name == "l2_squared":
    return distances.l2_squared
  if name == "l2":
    return distances.l2
  if name == "l1":
    return distances.l1
  if name == "pseudo_huber":
    return lambda a, b: distances.pseudo_huber(a, b, c)
  if name == "lpips":
    if lpips_params is None:
      raise ValueError("distance 'lpips' needs LPIPS parameters (see cmjax.lpips)")
    def d(a, b):
      if a.shape[-1] == 1:
        a, b = repeat_grayscale(a), repeat_grayscale(b)
      return lpips.lpips_distance(lpips_params, a, b, lpips_resize or None)
    return d
  raise ValueError(f"unknown distance {name!r}; known: {DISTANCE_NAMES}")
