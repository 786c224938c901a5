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
  """step: int32 scalar; params / ema_params: backbone parameters; opt_state: optax state."""
  step: jax.Array
  params: Any
  ema_params: Any
  opt_state: Any


def build_optimizer(optim_config) -> optax.GradientTransformation:
  """Adam or RAdam with linear lr warmup, optional global-norm clipping and weight decay.

  Every field is honoured for every optimiser (the official CM code ignored warmup
  and clipping under RAdam). Fields: name ('adam'|'radam'), lr, b1, b2, eps,
  warmup_steps, grad_clip (<= 0: off), weight_decay (decoupled, 0: off).
  """
  c = optim_config
  lr = schedules.warmup_constant_lr(c.lr, c.warmup_steps)
  if c.name == "adam":
    opt = optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps)
  elif c.name == "radam":
    opt = optax.scale_by_radam(b1=c.b1, b2=c.b2, eps=c.eps)
  else:
    raise ValueError(f"unknown optimizer {c.name!r}; known: 'adam', 'radam'")
  chain = []
  if c.grad_clip > 0:
    chain.append(optax.clip_by_global_norm(c.grad_clip))
  chain.append(opt)
  if c.weight_decay > 0:
    chain.append(optax.add_decayed_weights(c.weight_decay))
  chain.append(optax.scale_by_learning_rate(lr))
  return optax.chain(*chain)


def init_train_state(model, optimizer, key, image_shape) -> TrainState:
  """Initialises params from `key` with a dummy (1, *image_shape) input; EMA = params."""
  x = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
  params = model.init(key, x, jnp.zeros((1,), jnp.float32), train=False)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema_params=jax.tree.map(jnp.copy, params), opt_state=optimizer.init(params))
