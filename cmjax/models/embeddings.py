"""Embeddings of scalar conditions shared by the backbones (noise level, second time, classes)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def positional_embedding(x: Array, channels: int, max_positions: float = 10000.0,
                         endpoint: bool = False) -> Array:
  """Sinusoidal embedding of scalars (Vaswani et al.; DDPM; EDM's PositionalEmbedding).

  x (B,) -> (B, channels) float32 = [cos, sin](x freqs), freqs_i = max_positions^(-i / (channels/2
  - endpoint)), i = 0..channels/2-1. endpoint=False: DDPM, ADM and cmjax's UNet/MLP;
  endpoint=True: EDM's DDPM++.
  """
  half = channels // 2
  freqs = jnp.exp(-math.log(max_positions) * jnp.arange(half, dtype=jnp.float32)
                  / (half - int(endpoint)))
  args = x.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def fourier_embedding(x: Array, channels: int, scale: float, seed: int, freqs=None) -> Array:
  """NCSN++ random Fourier features (EDM FourierEmbedding): x (B,) -> (B, channels).

  freqs ~ N(0, scale^2), channels/2 of them, fixed (a buffer in EDM, not trained); here drawn
  from numpy's generator with `seed`, so they are a constant of the model, not a parameter, unless
  `freqs` (channels/2 floats, e.g. an imported file's buffer) gives them. Returns
  [cos, sin](2 pi x freqs).
  """
  if freqs is not None:
    freqs = np.asarray(freqs, np.float32)
    if freqs.shape != (channels // 2,):
      raise ValueError(f"fourier_freqs must hold {channels // 2} values, got shape {freqs.shape}")
  else:
    freqs = np.random.default_rng(seed).standard_normal(channels // 2).astype(np.float32) * scale
  args = x.astype(jnp.float32)[:, None] * jnp.asarray(2 * np.pi * freqs)[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def label_vectors(class_labels, batch: int, label_dim: int) -> Array:
  """Class labels (B,) ints or (B, label_dim) -> (B, label_dim) float32; None -> zeros (EDM's
  unconditional input)."""
  if class_labels is None:
    return jnp.zeros((batch, label_dim), jnp.float32)
  class_labels = jnp.asarray(class_labels)
  if class_labels.shape == (batch,) and jnp.issubdtype(class_labels.dtype, jnp.integer):
    return jax.nn.one_hot(class_labels, label_dim, dtype=jnp.float32)
  if class_labels.shape != (batch, label_dim):
    raise ValueError(f"class_labels must be ({batch},) ints or ({batch}, {label_dim}), "
                     f"got {class_labels.shape} {class_labels.dtype}")
  return class_labels.astype(jnp.float32)
