"""The whole training state as one pytree (what a checkpoint holds)."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from cmjax import schedules


@flax.struct.dataclass
class TrainState:
  """The train state.

  step: int32 scalar; params / ema_params: backbone parameters (EMA for sampling);
  opt_state: optax state of the trainable pair (params, aux_params);
  aux_params: trainable parameters owned by the objective (sCM's adaptive weight), {} if none;
  target_params: the EMA target network theta- of CT/CD, None if the objective has none;
  teacher_params: a frozen teacher (CD, sCD), None if none. Never updated; saved with the
    state so a checkpoint is self-contained.
  distance_params: the LPIPS network when the objective's distance is 'lpips', else None.
  """
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any
  aux_params: Any = flax.struct.field(default_factory=dict)
  target_params: Any = None
  teacher_params: Any = None
  distance_params: Any = None


def muon_dimension_numbers(params):
  """Which parameters Muon orthogonalises, and along which axes (None: Adam's).

  Kernels with >= 2 axes are matrices: a Dense kernel (in, out) as it is, a convolution kernel
  (kh, kw, in, out) flattened to (kh*kw*in, out) — reduction over every axis but the last, as
  in Keller Jordan's Muon for convolutions. Vectors and scalars (biases, norm scales, sCM's
  adaptive-weight bias) go to Adam, the usual treatment of non-matrix parameters.
  """
  def spec(x):
    if x.ndim < 2:
      return None
    return optax.contrib.MuonDimensionNumbers(reduction_axis=tuple(range(x.ndim - 1)),
                                              output_axis=x.ndim - 1)
  return jax.tree.map(spec, params)


def build_optimizer(optim_config, warmup_steps: float | None = None,
                    lr: optax.Schedule | None = None, frozen=None) -> optax.GradientTransformation:
  """Adam, RAdam or Muon with linear lr warmup, optional global-norm clipping and weight decay.

  Every field is honoured for every optimiser (the official CM code ignored warmup
  and clipping under RAdam). Fields: name ('adam'|'radam'|'muon'), lr, b1, b2, eps,
  warmup_steps, grad_clip (<= 0: off), weight_decay (decoupled, 0: off), muon_beta.
  `warmup_steps`, when given, replaces the config's (the trainer passes the one resolved from
  optim.warmup_kimg); `lr`, when given, is the whole learning-rate schedule (the builders pass
  `schedules.lr_schedule`, which adds optim.lr_decay), else warm-up then constant.

  'muon' is `optax.contrib.muon` (Jordan 2024; Liu et al. 2025): matrices (see
  `muon_dimension_numbers`) step along the Newton-Schulz orthogonalised Nesterov momentum
  (momentum `muon_beta`), scaled to AdamW's update RMS (`consistent_rms=0.2`, Liu et al. Eq. 4)
  so one `lr` serves both parts; every other parameter takes optax's AdamW step (b1, b2, eps,
  Nesterov as optax does). Weight decay, if any, is decoupled for both parts.

  `frozen` (a function params -> tree of bools, e.g. `cmjax.models.buffer_mask`) marks buffers
  stored among the parameters: with weight decay on, their updates are zeroed (`optax.masked`
  `set_to_zero`), since decoupled decay would otherwise shrink them although their gradient is
  zero. Without weight decay nothing is added (a zero gradient already gives a zero step, and the
  optimiser state keeps the structure that earlier checkpoints hold).
  """
  c = optim_config
  if lr is None:
    lr = schedules.warmup_constant_lr(c.lr, c.warmup_steps if warmup_steps is None else warmup_steps)
  if c.name not in ("adam", "radam", "muon"):
    raise ValueError(f"unknown optimizer {c.name!r}; known: 'adam', 'radam', 'muon'")
  chain = []
  if c.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(c.grad_clip))
  if c.name == "muon":
    chain.append(optax.contrib.muon(
        learning_rate=lr, beta=getattr(c, "muon_beta", 0.95), weight_decay=c.weight_decay,
        adam_b1=c.b1, adam_b2=c.b2, eps=c.eps, adam_weight_decay=c.weight_decay,
        muon_weight_dimension_numbers=muon_dimension_numbers, consistent_rms=0.2))
  else:
    chain.append(optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps) if c.name == "adam"
                 else optax.scale_by_radam(b1=c.b1, b2=c.b2, eps=c.eps))
    if c.weight_decay > 0:
      chain.append(optax.add_decayed_weights(c.weight_decay))
    chain.append(optax.scale_by_learning_rate(lr))
  if frozen is not None and c.weight_decay > 0:
    chain.append(optax.masked(optax.set_to_zero(), frozen))
  return optax.chain(*chain)


def init_train_state(model, optimizer, key, image_shape, objective=None,
                     teacher_params=None, init_params=None, distance_params=None,
                     num_classes: int = 0, num_times: int = 1) -> TrainState:
  """A fresh TrainState.

  Args:
    model: the linen backbone; params come from model.init(key, zeros (1, *image_shape)).
    optimizer: optax transformation over the pair (params, aux_params).
    key: PRNG key (params use `key` itself, the objective's aux params fold_in(key, 1)).
    objective: if given, supplies aux_params (`init_aux`) and whether a target network
      theta- = params is kept (`uses_target`).
    teacher_params: frozen teacher parameters stored in the state (CD, sCD).
    distance_params: the LPIPS parameters (frozen) when the distance is 'lpips'.
    init_params: start from these backbone parameters instead of random ones (e.g. the
      teacher's, as CD does in the CM paper).
    num_classes: > 0 for a class-conditional backbone (it is initialised with labels).
    num_times: 2 for a family whose network takes a second time (initialised with c_noise_2).
  EMA and target start equal to params.
  """
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  kw = {"class_labels": jnp.zeros((1,), jnp.int32)} if num_classes else {}
  if num_times == 2:
    kw["c_noise_2"] = jnp.zeros((1,), jnp.float32)
  uses_target = objective is not None and objective.uses_target

  def fresh(key, init_params):
    params = model.init(key, x, jnp.zeros((1,), jnp.float32), train=False, **kw)["params"]
    if init_params is not None:
      params = jax.tree.map(lambda p, q: jnp.asarray(q, p.dtype).reshape(p.shape), params,
                            init_params)
    aux = objective.init_aux(jax.random.fold_in(key, 1)) if objective is not None else {}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      ema_params=jax.tree.map(jnp.copy, params),
                      opt_state=optimizer.init((params, aux)), aux_params=aux,
                      target_params=jax.tree.map(jnp.copy, params) if uses_target else None)

  # One compiled program (an eager flax init compiles and dispatches every op on its own: ~9 s
  # for the digits U-Net on a CPU); inside a caller's jit or eval_shape it is traced inline.
  state = jax.jit(fresh)(key, init_params)
  return state.replace(teacher_params=teacher_params, distance_params=distance_params)
