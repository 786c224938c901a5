"""Tiny latent-data fixtures shared by tests/test_latent.py and tests/test_latent_configs.py: an
f8c4 VAE with 8-channel levels (its .npz + .json as scripts/convert_sd_vae.py writes them), mock
images in class folders, and a mock latent data set written record by record."""
import json
import os

import jax
import numpy as np

from cmjax.data.latent import FORMAT, META, latent_shape, pack_record, shard_name


def tiny_vae_file(path: str, seed: int = 0) -> str:
  """Writes an f8c4 AutoencoderKL with (8, 8, 8, 8) channels to path (.npz + .json); returns path."""
  from cmjax.models.vae import sd_vae
  from cmjax.weights.vae_diffusers import save_vae_npz

  vae = sd_vae(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)
  params = vae.init(jax.random.key(seed), np.zeros((1, 16, 16, 3), np.float32))["params"]
  save_vae_npz(params, vae, path)
  return path


def mock_images(root: str, classes=("a", "b"), per_class: int = 3, seed: int = 0) -> str:
  """PNG files of random sizes (>= 40 px) under root/<class>/; returns root."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  for c in classes:
    os.makedirs(os.path.join(root, c), exist_ok=True)
    for i in range(per_class):
      h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
      Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
          os.path.join(root, c, f"{i}.png"))
  return root


def mock_latents(path: str, n: int, resolution: int = 256, classes: int = 1000, seed: int = 0,
                 shard: int = 5) -> dict:
  """A latent data set of n random records (mean ~ N(0, 25), std in [0.1, 0.2]: SD-VAE-like
  scales) in `path`; returns {'meta', 'moments' (n, 2, 2, h, w, c), 'labels' (n,)}."""
  from array_record.python.array_record_module import ArrayRecordWriter

  rng = np.random.default_rng(seed)
  shape = latent_shape(resolution)
  moments = np.empty((n, 2, 2) + shape, np.float32)
  moments[:, :, 0] = 5.0 * rng.standard_normal((n, 2) + shape)
  moments[:, :, 1] = rng.uniform(0.1, 0.2, (n, 2) + shape)
  labels = rng.integers(0, max(classes, 1), n).astype(np.int32)
  os.makedirs(path, exist_ok=True)
  count = -(-n // shard)
  names = [shard_name(s, count) for s in range(count)]
  for s, name in enumerate(names):
    w = ArrayRecordWriter(os.path.join(path, name), "group_size:1")
    for i in range(s * shard, min(n, (s + 1) * shard)):
      w.write(pack_record(int(labels[i]), moments[i]))
    w.close()
  meta = {"format": FORMAT, "resolution": resolution, "latent_shape": list(shape),
          "num_records": n, "num_classes": classes, "scaling_factor": 0.18215,
          "shift_factor": 0.0, "crop": "adm_center_crop", "source": "mock", "shard_size": shard,
          "shards": names, "shard_sizes": [min(n, (s + 1) * shard) - s * shard for s in range(count)]}
  with open(os.path.join(path, META), "w") as f:
    json.dump(meta, f)
  return {"meta": meta, "moments": moments, "labels": labels}
