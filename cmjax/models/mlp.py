"""A small residual MLP backbone for flat (2-D toy) data, also usable on tiny images.

Like the U-Net, the backbone only sees (c_in * x, c_noise) and knows nothing of
noise levels; the preconditioner (cmjax.parametrization) wraps it.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.embeddings import positional_embedding

Array = jax.Array


class MLPBlock(nn.Module):
  """Pre-norm residual block: LayerNorm-SiLU-Dense, + time embedding, SiLU-Dropout-Dense."""
  hidden: int
  dropout: float = 0.0

  @nn.compact
  def __call__(self, h: Array, emb: Array, train: bool) -> Array:
    r = nn.silu(nn.LayerNorm()(h))
    r = nn.Dense(self.hidden)(r) + nn.Dense(self.hidden)(emb)
    r = nn.silu(r)
    r = nn.Dropout(self.dropout, deterministic=not train)(r)
    return h + nn.Dense(self.hidden)(r)


class MLP(nn.Module):
  """Residual MLP: (B, D) inputs (or (B, ...), flattened) and (B,) c_noise -> same shape as x.

  Input Dense to `hidden`, `depth` pre-norm residual blocks each adding a
  projection of the time embedding, then LayerNorm-SiLU and a zero-initialised
  output Dense (so the backbone outputs exactly 0 at init, as the U-Net does).

  Attributes:
    hidden: width of the residual stream and of the time embedding.
    depth: number of residual blocks.
    dropout: dropout rate inside the blocks (train=True only).
    time_scale: c_noise is multiplied by this before the positional embedding
      (as in the U-Net: spreads c_noise = ln(t)/4 over the embedding frequencies).
  """
  hidden: int = 256
  depth: int = 4
  dropout: float = 0.0
  time_scale: float = 1000.0

  @nn.compact
  def __call__(self, x: Array, c_noise: Array, train: bool = False,
               c_noise_2: Array | None = None) -> Array:
    """x (B, D) or (B, H, W, C), c_noise (B,) (or scalar) -> (B, ...) like x.

    c_noise_2: an optional second conditioning time (B,) (or scalar); when given, a learned
    projection of its embedding is added to the time embedding (as in the UNet)."""
    batch = x.shape[0]
    h = x.reshape(batch, -1)
    c_noise = jnp.broadcast_to(jnp.asarray(c_noise), (batch,))
    emb = positional_embedding(c_noise * self.time_scale, self.hidden)
    if c_noise_2 is not None:
      c2 = jnp.broadcast_to(jnp.asarray(c_noise_2), (batch,))
      emb = emb + nn.Dense(self.hidden, name="time2_embed")(
          positional_embedding(c2 * self.time_scale, self.hidden))
    emb = nn.silu(nn.Dense(self.hidden)(emb))
    emb = nn.silu(nn.Dense(self.hidden)(emb))
    h = nn.Dense(self.hidden)(h)
    for _ in range(self.depth):
      h = MLPBlock(self.hidden, self.dropout)(h, emb, train)
    h = nn.silu(nn.LayerNorm()(h))
    out = nn.Dense(x[0].size, kernel_init=nn.initializers.zeros)(h)
    return out.reshape(x.shape)


BACKBONES = {"mlp": MLP}
