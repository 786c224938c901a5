"""The learned adaptive weight w_phi(t) of sCM (Lu & Song 2024, Sec. 4.4; after EDM2).

loss = exp(w(t)) / D * ||residual||^2 - w(t): for a fixed residual the optimum is
exp(w) = D / ||residual||^2, so w learns (minus) the log of the loss level at each t and
balances the noise levels. A linear layer on a positional embedding of t, zero-initialised
(w = 0 at the start).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.unet import positional_embedding

Array = jax.Array


class AdaptiveWeight(nn.Module):
  """w_phi(t): (B,) times -> (B,) log-weights. `time_scale` * t is embedded in `dim` features."""
  dim: int = 128
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, t: Array) -> Array:
    emb = positional_embedding(t * self.time_scale, self.dim)
    return nn.Dense(1, kernel_init=nn.initializers.zeros)(emb)[:, 0]


def init_adaptive_weight(key: Array) -> dict:
  """Parameters of `AdaptiveWeight` (as {'weight': params})."""
  return {"weight": AdaptiveWeight().init(key, jnp.zeros((1,)))["params"]}


def weighted_loss(aux: dict, t: Array, mean_sq: Array, adaptive: bool) -> tuple[Array, Array]:
  """(exp(w(t)) mean_sq - w(t), w(t)) if adaptive, else (mean_sq, 0). mean_sq = ||.||^2 / D, (B,)."""
  if not adaptive:
    return mean_sq, jnp.zeros_like(mean_sq)
  w = AdaptiveWeight().apply({"params": aux["weight"]}, t)
  return jnp.exp(w) * mean_sq - w, w
