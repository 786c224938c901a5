"""The VAE of a latent run (data.name='latent'): read from data.vae_weights, it encodes images for
`--mode encode` and decodes the sampler's latents to pixels for grids, sample files and FID.

Scaling (Rombach et al. 2022, Sec. 4.3 and App. G; diffusers' pipelines): the generator works on
x = (z - shift) * scaling_factor (0.18215, shift 0 for SD), so decoding divides by the factor
(`cmjax.models.vae.decode`'s convention), and encoding stores the UNSCALED posterior moments
(`cmjax.data.latent` scales them when it reads them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import parallel
from cmjax.errors import ConfigError
from cmjax.models.vae import AutoencoderKL


def load_vae(path: str, field: str = "data.vae_weights"):
  """(vae module, params) from the .npz at `path` and its .json (scripts/convert_sd_vae.py);
  ConfigError (one line) naming `field` when it cannot be read or does not fit its config."""
  from cmjax.weights.vae_diffusers import load_vae_npz

  try:
    return load_vae_npz(path)
  except ConfigError as e:
    raise ConfigError(f"{field}: {e}") from None
  except ValueError as e:  # checked_params: a missing or wrongly shaped array
    raise ConfigError(f"{field}: {' '.join(str(e).split())[:300]}") from None


def decode_fn(vae: AutoencoderKL):
  """(vae_params, z (B, h, w, c) scaled latents) -> (B, f h, f w, 3) float32 pixels in [-1, 1]
  (clipped): decoder(z / scaling_factor + shift); jit-able, traced into the sampler's program."""
  scale, shift = float(vae.scaling_factor), float(vae.shift_factor or 0.0)

  def decode(vae_params, z):
    z = jnp.asarray(z, jnp.float32) / scale + shift
    x = vae.apply({"params": vae_params}, z, method=AutoencoderKL.decode)
    return jnp.clip(x.astype(jnp.float32), -1.0, 1.0)
  return decode


def latent_decoder(config, mesh):
  """(decode_fn, vae params replicated on the mesh) for `cmjax.sampler.Sampler` when config.data
  is latent, else None."""
  if config.data.name != "latent":
    return None
  vae, params = load_vae(config.data.vae_weights)
  return decode_fn(vae), jax.device_put(params, parallel.replicated(mesh))


def moments_fn(vae: AutoencoderKL):
  """(vae_params, x (B, H, W, 3) in [-1, 1]) -> (B, 2, 2, H/f, W/f, c) float32: for the image and
  its horizontal mirror, the posterior mean and std = exp(logvar / 2) (logvar clipped to
  [-30, 20], diffusers' DiagonalGaussianDistribution), unscaled. One encoder pass over 2B images."""
  def moments(vae_params, x):
    both = jnp.concatenate([x, x[:, :, ::-1]], axis=0)
    post = vae.apply({"params": vae_params}, both, method=AutoencoderKL.encode)
    b = x.shape[0]
    mean = jnp.stack([post.mean[:b], post.mean[b:]], axis=1)
    std = jnp.stack([post.std[:b], post.std[b:]], axis=1)
    return jnp.stack([mean, std], axis=2)
  return moments


def make_encoder(vae: AutoencoderKL, mesh):
  """jit of `moments_fn(vae)` with the images split over the mesh (compiled once per batch size)."""
  sh, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  return jax.jit(moments_fn(vae), in_shardings=(rep, sh), out_shardings=sh)


def encode_batches(encoder, params, batches, batch_size: int, num_devices: int):
  """Yields (moments (n, 2, 2, h, w, c) np.float32, labels) for each (uint8 images (n, H, W, 3),
  labels) of `batches` (n <= batch_size), through `make_encoder`'s function; every batch is padded
  to batch_size rounded up to a multiple of the devices, so one program serves all."""
  full = -(-int(batch_size) // num_devices) * num_devices
  for images, labels in batches:
    n = len(images)
    x = np.zeros((full,) + tuple(images.shape[1:]), np.float32)
    x[:n] = np.asarray(images, np.float32) / 127.5 - 1.0
    yield np.asarray(encoder(params, x))[:n], labels
