"""`--mode encode`: the one-time step from images to the latent data set a latent run trains on.

  cmjax --config imagenet256_meanflow_xl2 --workdir runs/x --mode encode \\
      --config.encode.path=/data/imagenet/train --config.data.path=/data/in256_latents \\
      --config.data.vae_weights=sd_vae_ft_mse.npz

Reads config.encode's images (`cmjax.data.raw_images`: a folder of class sub-folders or a TFDS
image data set), crops each with ADM's centre crop to data.resolution, encodes it and its mirror
with the VAE of data.vae_weights (`cmjax.latent_vae.moments_fn`: posterior mean and std, unscaled)
and writes the array_record shards and latents.json of `cmjax.data.latent` to data.path.

Shard s holds records [s * shard_size, (s + 1) * shard_size) in the source's order; process p of P
encodes the shards s = p (mod P), each written to a temporary name and renamed when complete, so a
rerun after an interruption skips the finished shards (latents.partial.json records the settings
and refuses a rerun with others). Process 0 writes latents.json last. Bad input (data.name not
'latent', a missing VAE file, a source that is not images) stops with one line before anything is
compiled.
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import os
import time

import jax
import numpy as np

from cmjax.data.latent import (FORMAT, LATENT_CHANNELS, LATENT_FACTOR, META, latent_shape,
                               pack_record, shard_name)
from cmjax.data.raw_images import open_images
from cmjax.errors import ConfigError
from cmjax.latent_vae import encode_batches, load_vae, make_encoder
from cmjax.parallel import make_data_mesh, replicated
from cmjax.run_logging import write_json_atomic

PARTIAL = "latents.partial.json"


def check_encode_config(config) -> None:
  """One-line ConfigErrors for --mode encode, before anything is read or compiled (the images are
  opened, and the VAE's config read, by `encode` right after)."""
  d, e = config.data, config.encode

  def need(cond, msg):
    if not cond:
      raise ConfigError(msg)

  need(d.name == "latent", f"--mode encode writes a latent data set: set data.name='latent' (and "
       f"data.path, data.vae_weights), not {d.name!r}")
  need(bool(d.path), "--mode encode needs data.path, the directory the latents are written to")
  need(d.resolution > 0 and d.resolution % LATENT_FACTOR == 0, f"data.resolution must be a "
       f"positive multiple of {LATENT_FACTOR} (the crop side, 256 for ImageNet 256), got "
       f"{d.resolution}")
  need(bool(d.vae_weights), "--mode encode needs data.vae_weights, the VAE .npz "
       "(scripts/convert_sd_vae.py)")
  need(os.path.isfile(d.vae_weights), f"data.vae_weights: no such file {d.vae_weights!r} "
       f"(convert the SD VAE with scripts/convert_sd_vae.py)")
  need(e.source in ("folder", "tfds"), f"encode.source must be 'folder' or 'tfds' (a data set of "
       f"images), got {e.source!r}")
  need(e.batch_size > 0 and e.shard_size > 0, f"encode.batch_size and encode.shard_size must be "
       f"positive, got {e.batch_size}, {e.shard_size}")


def _settings(config, vae, source) -> dict:
  d = config.data
  return {"format": FORMAT, "resolution": int(d.resolution),
          "latent_shape": list(latent_shape(d.resolution)), "num_records": len(source),
          "num_classes": int(source.num_classes), "scaling_factor": float(vae.scaling_factor),
          "shift_factor": float(vae.shift_factor or 0.0), "crop": "adm_center_crop",
          "source": source.what, "vae_file": os.path.basename(d.vae_weights),
          "shard_size": int(config.encode.shard_size)}


def _write_shard(path: str, encoder, params, source, indices, config, devices: int) -> int:
  """Encodes records `indices` into the array_record file `path` (via path + '.tmp')."""
  from array_record.python.array_record_module import ArrayRecordWriter

  size, bs = int(config.data.resolution), int(config.encode.batch_size)
  pool = concurrent.futures.ThreadPoolExecutor(max(1, int(config.data.read_threads)))

  def batches():
    for start in range(0, len(indices), bs):
      pairs = list(pool.map(lambda i: source.read(i, size), indices[start:start + bs]))
      yield np.stack([p[0] for p in pairs]), [p[1] for p in pairs]

  tmp = path + ".tmp"
  writer = ArrayRecordWriter(tmp, "group_size:1")  # one record per chunk: cheap random reads
  try:
    for moments, labels in encode_batches(encoder, params, batches(), bs, devices):
      for m, label in zip(moments, labels):
        writer.write(pack_record(label, m))
  finally:
    writer.close()
    pool.shutdown()
  os.replace(tmp, path)
  return len(indices)


def encode(config, workdir: str) -> dict:
  """`--mode encode` (module docstring); returns latents.json's content."""
  check_encode_config(config)
  d = config.data
  vae, params = load_vae(d.vae_weights)  # one line for a bad file, before compiling
  if vae.downsampling_factor != LATENT_FACTOR or vae.latent_channels != LATENT_CHANNELS:
    raise ConfigError(f"data.vae_weights {d.vae_weights!r} is an f{vae.downsampling_factor}c"
                      f"{vae.latent_channels} VAE; latent data needs the SD f8c4 VAE")
  source = open_images(config.encode)
  settings = _settings(config, vae, source)
  os.makedirs(d.path, exist_ok=True)
  meta_path, partial_path = os.path.join(d.path, META), os.path.join(d.path, PARTIAL)
  for path in (meta_path, partial_path):
    if os.path.isfile(path):
      with open(path) as f:
        old = json.load(f)
      same = {k: old.get(k) for k in settings} == settings
      if not same:
        raise ConfigError(f"{path} holds an encode of other settings (source, resolution, VAE or "
                          f"shard size); choose another data.path or remove it")
      if path == meta_path:
        print(f"cmjax: {d.path} already holds these latents ({old['num_records']} records)")
        return old
  pi, pc = jax.process_index(), jax.process_count()
  if pi == 0:
    write_json_atomic(partial_path, settings)
  n, per = len(source), int(config.encode.shard_size)
  count = math.ceil(n / per)
  names = [shard_name(s, count) for s in range(count)]
  mesh = make_data_mesh(jax.local_devices())  # each process encodes its shards on its devices
  encoder, params = make_encoder(vae, mesh), jax.device_put(params, replicated(mesh))
  t0, done = time.perf_counter(), 0
  for s in range(pi, count, pc):
    path = os.path.join(d.path, names[s])
    if os.path.isfile(path):  # finished by an earlier, interrupted run
      continue
    done += _write_shard(path, encoder, params, source,
                         list(range(s * per, min(n, (s + 1) * per))), config, mesh.devices.size)
    print(f"cmjax: encode: wrote {names[s]} ({done} images, "
          f"{done / (time.perf_counter() - t0):.1f} img/s)")
  if pc > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("cmjax_encode_done")
  meta = {**settings, "shards": names, "shard_sizes": [min(n, (s + 1) * per) - s * per
                                                      for s in range(count)],
          "vae": {k: (list(v) if isinstance(v, tuple) else v) for k, v in _vae_fields(vae).items()}}
  if pi == 0:
    write_json_atomic(meta_path, meta)
    os.remove(partial_path)
  print(f"cmjax: encode: {n} images -> {d.path} ({count} shards, latents {tuple(meta['latent_shape'])})")
  return meta


def _vae_fields(vae) -> dict:
  from cmjax.weights.vae_diffusers import vae_config
  return vae_config(vae)
