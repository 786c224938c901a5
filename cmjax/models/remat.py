"""Rematerialised residual blocks for the U-Nets' `remat` option (DiT has its own)."""
from __future__ import annotations

import flax.linen as nn


def remat_block(block_cls, enabled: bool):
  """`block_cls` itself, or its `nn.remat` (jax.checkpoint) version when `enabled`: the block's
  activations are recomputed in the backward pass instead of stored (Chen et al. 2016,
  "Training deep nets with sublinear memory cost"). The block must be called as
  block(x (B, H, W, C), emb (B, E), train: bool); `train` is static (argnum 3, self = 0).
  Parameters (names and shapes), outputs and gradients are those of `block_cls`; a dropout
  mask is drawn from the same rng when it is recomputed."""
  return nn.remat(block_cls, static_argnums=(3,)) if enabled else block_cls
