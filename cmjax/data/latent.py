"""Pre-encoded VAE latents as training data (data.name='latent'), stored as array_record shards.

Latent-space generators (DiT with MeanFlow / shortcut models at ImageNet 256) train on the SD VAE's
latents of 256x256 images: (32, 32, 4) per image for the f8c4 VAE. Encoding once (`--mode encode`,
`cmjax.modes.encode`) and reading the posterior moments back is the authors' practice (MeanFlow's
JAX code stores the posterior mean and std per image and samples mean + std * eps each step,
times 0.18215; Gsunshine/meanflow utils/vae_util.py LatentManager.cached_encode).

On disk (data.path):
  latents.json      {'format': FORMAT, 'num_records': N, 'latent_shape': [h, w, c],
                     'resolution': r, 'num_classes': K (0 = no labels), 'scaling_factor',
                     'shift_factor', 'vae': the VAE's config, 'shards': [file names],
                     'shard_sizes': [...], 'source': what was encoded, 'crop': 'adm_center_crop'}
  latents-SSSSS-of-TTTTT.array_record   record i (in shard order) = RECORD_LAYOUT:
                     label int32 little-endian (4 bytes), then float32 little-endian
                     (2, 2, h, w, c): [original, horizontally flipped image] x [mean, std] of the
                     posterior N(mean, std^2) in UNSCALED VAE units.
Why array_record: random access by record index (the step-indexed pipeline reads the records of
a permutation, cmjax.data.pipeline), several shards written independently by several processes,
the format TFDS itself builds (array_record is installed with tensorflow-datasets), and no
TensorFlow. Records are fixed-size raw float32, decoded with one np.frombuffer (no pickle).

A batch (`LatentSource.batch(step)`): example k of the global batch of step s takes the flipped
entry when data.random_flip and the pipeline's flip draw for (seed, s, k) says so (the latent of the
mirrored image, not a mirrored latent), then x = (mean + std * eps) * scaling_factor with eps from
default_rng([seed, _EPS_STREAM, s, k]) when data.latent_sample (the authors' posterior sample),
else x = mean * scaling_factor (shift_factor subtracted first): (local_batch, h, w, c) float32,
a pure function of (seed, step, k) like every batch of the pipeline.
"""
from __future__ import annotations

import functools
import json
import os

import numpy as np

from cmjax.data.pipeline import DataError, IndexedSource, first_line

FORMAT = "cmjax-latents-1"
META = "latents.json"
RECORD_LAYOUT = "label int32 + float32 (2 flips, 2 moments [mean, std], h, w, c), little-endian"
LATENT_FACTOR, LATENT_CHANNELS = 8, 4  # the SD f8c4 VAE: (r, r, 3) images -> (r/8, r/8, 4)
_EPS_STREAM = 0x6C617465  # 'late': posterior noise, apart from the permutations and flips


def latent_shape(resolution: int) -> tuple:
  """(resolution / 8, resolution / 8, 4): the f8c4 VAE's latent of a resolution^2 RGB image."""
  f = LATENT_FACTOR
  return (int(resolution) // f, int(resolution) // f, LATENT_CHANNELS)


def shard_name(index: int, count: int) -> str:
  """'latents-00003-of-00010.array_record'."""
  return f"latents-{index:05d}-of-{count:05d}.array_record"


def pack_record(label: int, moments: np.ndarray) -> bytes:
  """One record: label and moments (2, 2, h, w, c) float32 -> bytes (RECORD_LAYOUT)."""
  m = np.ascontiguousarray(moments, "<f4")
  if m.ndim != 5 or m.shape[:2] != (2, 2):
    raise ValueError(f"moments must be (2 flips, 2 [mean, std], h, w, c), got {m.shape}")
  return np.int32(label).astype("<i4").tobytes() + m.tobytes()


def unpack_record(data: bytes, shape: tuple) -> tuple[int, np.ndarray]:
  """bytes -> (label, moments (2, 2, h, w, c) float32); DataError if the size is wrong."""
  want = 4 + 4 * 4 * int(np.prod(shape))
  if len(data) != want:
    raise DataError(f"a latent record has {len(data)} bytes, expected {want} for latents {shape} "
                    f"({RECORD_LAYOUT}); re-encode with --mode encode")
  label = int(np.frombuffer(data, "<i4", 1)[0])
  return label, np.frombuffer(data, "<f4", offset=4).reshape((2, 2) + tuple(shape))


def _read_meta_cached(path: str, mtime: float) -> dict:
  del mtime  # part of the cache key only: a re-encoded data set is read again
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"cannot read the latent data set's {path}: {first_line(e)}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT:
    raise DataError(f"{path} is not a cmjax latent data set (format {FORMAT!r}); encode one with "
                    f"--mode encode")
  return meta


_read_meta = functools.lru_cache(maxsize=8)(_read_meta_cached)


def read_meta(path: str) -> dict:
  """The latents.json of the latent data set in directory `path` (DataError, one line, when it
  is missing or not ours)."""
  if not path or not os.path.isdir(path):
    raise DataError(f"data.path {path!r} is not a directory holding a latent data set; encode "
                    f"one with --mode encode (docs/latent.md)")
  meta_path = os.path.join(path, META)
  if not os.path.isfile(meta_path):
    raise DataError(f"no {META} in data.path {path!r}: not an encoded latent data set (or the "
                    f"encode did not finish); run --mode encode (docs/latent.md)")
  return _read_meta(meta_path, os.path.getmtime(meta_path))


def check_latent_config(config, need) -> dict:
  """One-line ConfigErrors for data.name='latent' (before anything is compiled): data.resolution,
  the data set's latents.json against data.resolution (the latent shape the model is built for)
  and the VAE file data.vae_weights (exists; its config is f8c4 with the data set's scaling).
  Returns the data set's metadata."""
  from cmjax.weights.vae_diffusers import vae_from_config  # reads the .json beside the weights

  d = config.data
  need(d.resolution > 0 and d.resolution % LATENT_FACTOR == 0, f"data.resolution must be a "
       f"positive multiple of {LATENT_FACTOR} for data.name='latent' (the image side the latents "
       f"were encoded at, 256 for ImageNet 256), got {d.resolution}")
  need(d.augment == 0, "data.augment applies to pixels; latent data cannot be augmented")
  meta = read_meta(d.path)
  want, have = latent_shape(d.resolution), tuple(meta.get("latent_shape", ()))
  need(have == want, f"the latent data set {d.path} holds latents of shape {have} (encoded at "
       f"{meta.get('resolution')} px) but data.resolution={d.resolution} needs {want}")
  need(bool(d.vae_weights), "data.name='latent' needs data.vae_weights, the VAE .npz "
       "(scripts/convert_sd_vae.py) that decodes samples to pixels")
  need(os.path.isfile(d.vae_weights), f"data.vae_weights: no such file {d.vae_weights!r} "
       f"(convert the SD VAE with scripts/convert_sd_vae.py)")
  cfg_path = d.vae_weights[:-4] + ".json" if d.vae_weights.endswith(".npz") else ""
  need(os.path.isfile(cfg_path), f"data.vae_weights {d.vae_weights!r}: no config .json beside "
       f"it (scripts/convert_sd_vae.py writes both)")
  vae = vae_from_config(cfg_path)
  need(vae.downsampling_factor == LATENT_FACTOR and vae.latent_channels == LATENT_CHANNELS,
       f"data.vae_weights {d.vae_weights!r} is an f{vae.downsampling_factor}c"
       f"{vae.latent_channels} VAE; latent data needs the SD f8c4 VAE")
  need(abs(vae.scaling_factor - meta.get("scaling_factor", -1)) < 1e-9,
       f"data.vae_weights scales latents by {vae.scaling_factor}, the data set was encoded with "
       f"{meta.get('scaling_factor')}")
  return meta


class LatentSource(IndexedSource):
  """Epoch-shuffled batches of pre-encoded latents (cmjax.data.pipeline.IndexedSource).

  Args:
    path: the latent data set's directory (module docstring). sample: draw x ~ the posterior
      (True) or take its mean. the rest: as IndexedSource (random_flip picks the flipped entry).
  Attributes (besides IndexedSource's): meta (latents.json), scale, shift.
  """

  def __init__(self, path: str, global_batch: int, seed: int, process_index: int = 0,
               process_count: int = 1, *, sample: bool = True, **kw):
    from array_record.python.array_record_data_source import ArrayRecordDataSource

    self.meta = meta = read_meta(path)
    files = [os.path.join(path, s) for s in meta["shards"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
      raise DataError(f"the latent data set {path} lacks its shard {missing[0]}")
    try:
      self.records = ArrayRecordDataSource(files)
    except Exception as e:  # noqa: BLE001 - a corrupt shard
      raise DataError(f"cannot open the latent shards under {path}: {first_line(e)}") from None
    if len(self.records) != meta["num_records"]:
      raise DataError(f"the latent data set {path} has {len(self.records)} records, its {META} "
                      f"says {meta['num_records']}")
    self.shape = tuple(meta["latent_shape"])
    self.sample = bool(sample)
    self.scale, self.shift = float(meta["scaling_factor"]), float(meta.get("shift_factor") or 0.0)
    super().__init__(len(self.records), global_batch, seed, process_index, process_count,
                     image_shape=self.shape, num_classes=int(meta["num_classes"]),
                     what=f"latent data set {path}", **kw)

  def read_records(self, indices: np.ndarray):
    """(moments (n, 2, 2, h, w, c) float32, labels (n,) int32) of records `indices`."""
    raw = self.records.__getitems__([int(i) for i in indices])
    pairs = [unpack_record(r, self.shape) for r in raw]
    return (np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, 2, 2) + self.shape, np.float32),
            np.array([p[0] for p in pairs], np.int32))

  def read_record(self, index: int):
    label, moments = unpack_record(self.records[int(index)], self.shape)
    return moments, label

  def assemble(self, step: int, moments: np.ndarray, labels) -> dict:
    """{'image': (n, h, w, c) float32 scaled latents, ['label']} of step `step` (module docstring)."""
    n = len(moments)
    flip = self.flips(step)[:n].astype(np.int64) if self.random_flip else np.zeros(n, np.int64)
    chosen = moments[np.arange(n), flip]  # (n, 2, h, w, c): mean, std
    x = chosen[:, 0] - self.shift
    if self.sample:
      eps = np.stack([np.random.default_rng([self.seed, _EPS_STREAM, int(step), self.offset + k])
                      .standard_normal(self.shape, np.float32) for k in range(n)])
      x = x + chosen[:, 1] * eps
    out = {"image": np.asarray(x * np.float32(self.scale), np.float32)}
    if self.with_labels:
      out["label"] = np.asarray(labels, np.int32)
    return out
