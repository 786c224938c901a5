"""The pure train step: `step(state, batch, key) -> (state, metrics)`."""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax

from cmjax.objectives.common import condition_on_labels
from cmjax.train_state import TrainState


def example_keys(key: jax.Array, step: jax.Array, batch_size: int,
                 axis_name: Optional[str] = None) -> jax.Array:
  """Per-example keys fold_in(fold_in(key, step), global_index) -> (batch_size,) keys.

  `batch_size` is the (per-device under pmap) batch size. Under `pmap` the global
  index of example i on device d is d * batch_size + i, so every example gets the
  same key however the global batch is split over devices or hosts.
  """
  step_key = jax.random.fold_in(key, step)
  index = jnp.arange(batch_size)
  if axis_name is not None:
    index = index + jax.lax.axis_index(axis_name) * batch_size
  return jax.vmap(jax.random.fold_in, (None, 0))(step_key, index)


AUGMENT_STREAM = 0x41554720  # fold_in constant of the augmentation's per-example keys ("AUG ")


def make_train_step(model_fn: Callable, objective: Callable, optimizer: optax.GradientTransformation,
                    ema_rate: float | optax.Schedule, axis_name: Optional[str] = None,
                    lr_schedule: Optional[optax.Schedule] = None,
                    skip_nonfinite: bool = False, grad_accum: int = 1,
                    augment: Optional[Callable] = None,
                    project: Optional[Callable] = None) -> Callable:
  """Builds `train_step(state, batch, key) -> (state, metrics)`.

  Args:
    model_fn: f(params, x, t, dropout_keys) (see `parametrization.make_model_fn`).
    objective: per-example loss (see `cmjax.objectives`).
    optimizer: optax transformation.
    ema_rate: EMA decay mu (a float or a schedule of the step, see
      `schedules.ema_decay_schedule`); ema <- mu ema + (1 - mu) params after each update.
    axis_name: None for `jax.jit` (the batch may be sharded over a mesh; XLA inserts
      the all-reduce), or the mapped axis name for `jax.pmap`, in which case the
      gradients and metrics are averaged with `lax.pmean` over that axis.
    lr_schedule: optional, only to report the learning rate in the metrics.
    skip_nonfinite: if True, a step whose loss or gradient norm is not finite leaves
      params, EMA and optimiser state unchanged (the step counter still advances) and
      reports metrics['skipped'] = 1; if False the update is applied as computed and
      the caller is expected to stop on a non-finite loss (the trainer does).
    grad_accum: k > 1 splits the batch into k micro-batches (example i goes to micro-batch
      i mod k, so each stays split over the devices like the batch) whose gradients are
      summed in a `lax.scan`; every example keeps its key, so the update equals the one of
      the whole batch (up to float summation order) at 1/k of the activation memory.
    augment: None, or `augment(keys (B,), x) -> (x', augment_labels (B, A))` (EDM's pipeline,
      `cmjax.data.augment.edm_augment` with its options bound): each example is augmented with
      its own key fold_in(example key, AUGMENT_STREAM) before the objective sees it (EDM
      augments inside its loss, training/loss.py), and the network is conditioned on its labels.
      The objective's own random streams are unchanged, so a run without augmentation is too.
    project: None, or params -> params applied to the trained parameters at the start of every
      step: the loss, gradient and update are computed at project(params), and the stored
      parameters (and so the EMA) are project(params) + update. This is EDM2's forced weight
      normalisation in EDM2's order (`cmjax.models.edm2_unet.edm2_force_normalize`; EDM2 and ECT
      normalise the weights in place at each train-mode forward, before the optimiser step).

  Objectives with a target network (CT, CD) get it as extra['target'] and it is moved
  towards the new params with decay objective.target_ema(step); a teacher in the state is
  passed as extra['teacher']; the objective's own trainable parameters (sCM's adaptive
  weight) as extra['aux'], optimised jointly with params.

  The step computes keys = fold_in(key, state.step) per step and one key per example
  (`example_keys`), so `key` is the run's constant training key and a resumed run
  continues bit-identically. batch: {'image': (B, H, W, C) float32} and, for class-conditional
  models, 'label': (B,) int32 (the model and a teacher are conditioned on it,
  `objectives.common.condition_on_labels`).
  Metrics: scalar means over the global batch ('loss', 'grad_norm', 'lr', the norms of the
  parameters and of the update, 'param_norm' and 'update_norm', and the objective's terms).
  """

  def train_step(state: TrainState, batch, key):
    x, labels = batch["image"], batch.get("label")
    keys = example_keys(key, state.step, x.shape[0], axis_name)
    aug = None
    if augment is not None:
      x, aug = augment(jax.vmap(lambda k: jax.random.fold_in(k, AUGMENT_STREAM))(keys), x)
    frozen = {"target": state.target_params, "teacher": state.teacher_params,
              "distance": state.distance_params}

    def loss_fn(trainable, x, keys, labels, aug):
      params, aux = trainable
      mf, obj = condition_on_labels(model_fn, objective, labels, aug)
      per_example, terms = obj(mf, params, x, keys, state.step, {**frozen, "aux": aux})
      return jnp.mean(per_example), {k: jnp.mean(v) for k, v in terms.items()}

    trainable = (state.params if project is None else project(state.params), state.aux_params)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum == 1:
      (loss, terms), grads = grad_fn(trainable, x, keys, labels, aug)
    else:  # micro-batch j = examples j, j + k, ...: (B, ...) -> (k, B / k, ...)
      split = lambda a: None if a is None else jnp.swapaxes(
          a.reshape((a.shape[0] // grad_accum, grad_accum) + a.shape[1:]), 0, 1)

      def micro(acc, mb):
        (l, t), g = grad_fn(trainable, *mb)
        return jax.tree.map(jnp.add, acc, (l, t, g)), None

      micro_batches = (split(x), split(keys), split(labels), split(aug))
      (l0, t0), g0 = jax.eval_shape(grad_fn, trainable, *jax.tree.map(lambda a: a[0], micro_batches))
      zero = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (l0, t0, g0))
      total, _ = jax.lax.scan(micro, zero, micro_batches)
      loss, terms, grads = jax.tree.map(lambda a: a / grad_accum, total)
    metrics = {"loss": loss, **terms}
    if axis_name is not None:
      grads = jax.lax.pmean(grads, axis_name)
      metrics = jax.lax.pmean(metrics, axis_name)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if lr_schedule is not None:
      metrics["lr"] = lr_schedule(state.step)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    params, aux = optax.apply_updates(trainable, updates)
    metrics["update_norm"] = optax.tree.norm(updates[0])
    metrics["param_norm"] = optax.tree.norm(params)
    mu = ema_rate(state.step) if callable(ema_rate) else ema_rate
    ema = jax.tree.map(lambda e, p: mu * e + (1.0 - mu) * p, state.ema_params, params)
    target = state.target_params
    if target is not None:  # theta- <- stopgrad(mu(k) theta- + (1 - mu(k)) theta) (CM paper, Alg. 2/3)
      mu_t = objective.target_ema(state.step)
      target = jax.tree.map(lambda e, p: mu_t * e + (1.0 - mu_t) * p, target, params)
      metrics["target_ema"] = jnp.asarray(mu_t, jnp.float32)
    if skip_nonfinite:
      finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
      keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
      params, ema, aux = keep(params, state.params), keep(ema, state.ema_params), keep(aux, state.aux_params)
      opt_state, target = keep(opt_state, state.opt_state), keep(target, state.target_params)
      metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
    new_state = state.replace(step=state.step + 1, params=params, ema_params=ema,
                              opt_state=opt_state, aux_params=aux, target_params=target)
    return new_state, metrics

  return train_step
