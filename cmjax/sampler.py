"""`Sampler(built)`: samples of a model on the device mesh, by sampler spec, reproducible per sample.

Sample i depends only on (config.seed, seed_offset, i), not on the batch size or the device
count; for a class-conditional model so does its class. The spec's family
(`cmjax.families.family_of_spec`) builds the sampling function; consistency samplers take their
levels traced, so one compile serves every list of the same length (the t_mid search tries many).

Latent models (data kind 'latents'): `Sampler(built, decoder=(decode_fn, vae_params))` decodes the
sampled latents to pixels in the same jitted program (decode_fn(vae_params, z (B, h, w, c)) ->
(B, 8h, 8w, 3) in [-1, 1]; `cmjax.latent_vae.latent_decoder` reads it from data.vae_weights), so
grids, sample files and FID all see images.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cmjax import parallel, sampling
from cmjax.builders import stream_key
from cmjax.families import family_of_spec
from cmjax.parametrization import bind_labels

_LABEL_STREAM = 7  # fold_in(sample key, 7): the classes drawn for class-conditional samples


def draw_classes(z_key, index, classes: int):
  """The class of sample i = index[k]: U{0..classes-1} from fold_in(fold_in(z_key, 7), i)."""
  label_key = jax.random.fold_in(z_key, _LABEL_STREAM)
  return jax.vmap(lambda i: jax.random.randint(jax.random.fold_in(label_key, i), (), 0,
                                               classes))(index)


class Sampler:
  """Jitted samplers of one built config (`cmjax.builders.Built`), cached per spec."""

  def __init__(self, built, decoder=None):
    self.built = built
    self.config = built.config
    self._cache = {}
    self.decoder = decoder  # None, or (decode_fn, vae_params): latents -> pixels (module docstring)

  def _compiled(self, spec: tuple):
    """(jitted sampler, its traced levels) for a sampler spec."""
    family = family_of_spec(spec)
    traced = not family.is_diffusion
    key = (spec[0], len(spec[1])) if traced else spec
    if key not in self._cache:
      b = self.built
      sh = parallel.batch_sharding(b.mesh)
      bs, shape, classes = self.config.eval.batch_size, b.image_shape, b.num_classes

      def sample(params, z_key, renoise_key, start, class_label, traced_levels, vae_params):
        z = jax.lax.with_sharding_constraint(sampling.sample_noise(z_key, bs, shape, start), sh)
        labels = None
        if classes:  # class_label >= 0: that class; else class i ~ U{0..classes-1} from key i
          drawn = draw_classes(z_key, start + jnp.arange(bs), classes)
          labels = jnp.where(class_label >= 0, class_label, drawn).astype(jnp.int32)
        s = (spec[0], traced_levels) if traced else spec
        fn = family.make_sample_fn(s, bind_labels(b.model_fn, labels), self.config.param)
        x = fn(params, z, renoise_key, start)
        if self.decoder is not None:
          x = jax.lax.with_sharding_constraint(self.decoder[0](vae_params, x), sh)
        return x

      self._cache[key] = jax.jit(sample, out_shardings=sh)
    return self._cache[key], (jnp.asarray(spec[1], jnp.float32) if traced else None)

  def generate(self, params, num: int, spec: tuple, seed_offset: int = 0,
               class_label: int = -1) -> np.ndarray:
    """`num` samples (num, ...) from `params` with sampler `spec` (`cmjax.families`), on the mesh
    (decoded to (num, H, W, 3) pixels for a latent model with a decoder).

    class_label: for a class-conditional model, -1 draws a class per sample (uniform), >= 0 uses
    that class for all. Every process must call this (it is a collective); all get all samples.
    """
    classes = self.built.num_classes
    if class_label >= classes > 0 or (class_label >= 0 and not classes):
      raise ValueError(f"class_label {class_label} is not a class of this model "
                       f"(model.label_dim={classes})")
    bs = self.config.eval.batch_size
    seed, rep = self.config.seed, parallel.replicated(self.built.mesh)
    z_key, renoise_key = jax.jit(lambda: tuple(jax.random.split(jax.random.fold_in(
        stream_key(seed, "sample"), seed_offset))), out_shardings=(rep, rep))()
    fn, levels = self._compiled(spec)
    vae_params = None if self.decoder is None else self.decoder[1]
    out = []
    for start in range(0, num, bs):
      x = fn(params, z_key, renoise_key, start, class_label, levels, vae_params)
      out.append(np.asarray(multihost_utils.process_allgather(x, tiled=True)))
    return np.concatenate(out)[:num]

  def sample_labels(self, num: int, seed_offset: int = 0, class_label: int = -1) -> np.ndarray:
    """The (num,) classes `generate` conditions sample i on (empty for unconditional models)."""
    classes = self.built.num_classes
    if not classes:
      return np.zeros((0,), np.int32)
    if class_label >= 0:
      return np.full((num,), class_label, np.int32)
    z_key = jax.random.split(jax.random.fold_in(stream_key(self.config.seed, "sample"),
                                                seed_offset))[0]
    return np.asarray(draw_classes(z_key, jnp.arange(num), classes), np.int32)
