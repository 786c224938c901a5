"""Training data sources. A source gives this process's share of the global batch at any step.

Data sets (config.data.name):
  'digits'               embedded sklearn digits, train split (1,437 x 8x8x1), 10 classes
  'toy2d_gmm8', 'toy2d_checkerboard'   fresh exact 2-D samples every step, shape (2,)
  'cifar10'              TFDS cifar10 train (50,000 x 32x32x3), 10 classes    (tfds_source.py)
  'imagenet64'           TFDS imagenet_resized/64x64 train (1,281,167 x 64x64x3), 1000 classes
  'folder'               the PNG/JPEG files under data.path, (resolution, resolution, 3), no labels
  'latent'               SD-VAE latents encoded by `--mode encode` under data.path, (resolution / 8,
                         resolution / 8, 4), the data set's classes                    (latent.py)

The source protocol (`build_source(config, process_index, process_count)`):
  .batch(step) -> {'image': (local_batch, *image_shape) float32 in [-1, 1],
                   'label': (local_batch,) int32 (only when source.with_labels)}, a pure
      function of (config, step, process index / count): see cmjax/data/pipeline.py for the
      epoch permutation, the per-process slices and the random flips. Each process reads
      only its own records.
  .iterate(start_step) -> BatchIterator over batch(start_step), batch(start_step + 1), ...
      (the same values) read ahead by data.read_threads threads, data.prefetch batches ahead;
      close() it (or use `with`) when done.
  .local_batch, .global_batch, .steps_per_epoch (0 for the toy data), .image_shape,
  .num_classes (of the data set, 0 = none), .with_labels.
`image_shape(config)`, `num_classes(config)` and `check_data_config(config)` read no data.
"""
from __future__ import annotations

import os

import jax

from cmjax.errors import ConfigError
from cmjax.data import augment as aug
from cmjax.data.digits import IMAGE_SHAPE as DIGITS_SHAPE, NUM_HELDOUT, NUM_IMAGES, load_digits_split
from cmjax.data.folder import FolderSource, image_extensions, list_images
from cmjax.data.latent import LatentSource, check_latent_config, latent_shape, read_meta
from cmjax.data.pipeline import ArraySource, BatchIterator, DataError, IndexedSource
from cmjax.data.tfds_source import TFDS_DATASETS, TfdsSource
from cmjax.data.toy2d import Toy2DSource

__all__ = ["ArraySource", "BatchIterator", "DataError", "IndexedSource", "DATASETS", "IMAGE_SHAPES",
           "data_kind",
           "NUM_CLASSES", "build_source", "check_data_config", "image_shape", "num_classes"]

# Data sets of a fixed shape: name -> (shape of one example, classes, train records or None).
_FIXED = {
    "digits": (DIGITS_SHAPE, 10, NUM_IMAGES - NUM_HELDOUT),
    "toy2d_gmm8": ((2,), 0, None),
    "toy2d_checkerboard": ((2,), 0, None),
    **{name: (shape, classes, size) for name, (_, shape, classes, size) in TFDS_DATASETS.items()},
}
# 'folder' and 'latent' have no fixed shape: use image_shape(config).
IMAGE_SHAPES = {name: v[0] for name, v in _FIXED.items()}
NUM_CLASSES = {**{name: v[1] for name, v in _FIXED.items()}, "folder": 0}


def data_kind(config) -> str:
  """What one example of config.data is: 'points' (the 2-D toy data, exact metrics), 'latents'
  (VAE latents: the sampler decodes them to pixels, `cmjax.latent_vae`) or 'images' (digits,
  TFDS, folder). Evaluators, grids and the LPIPS check go by the kind, not the name."""
  if config.data.name == "latent":
    return "latents"
  return "points" if len(image_shape(config)) == 1 else "images"


def image_shape(config) -> tuple:
  """The shape of one example of config.data, without reading the data (folder: (r, r, 3);
  latent: (r / 8, r / 8, 4), r = data.resolution, the SD f8c4 VAE's latents)."""
  name = config.data.name
  if name == "folder":
    r = int(config.data.resolution)
    return (r, r, 3)
  if name == "latent":
    return latent_shape(config.data.resolution)
  if name not in IMAGE_SHAPES:
    raise ConfigError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  return tuple(IMAGE_SHAPES[name])


def num_classes(config) -> int:
  """The classes of config.data's data set (0 = no labels), without reading the data (latent:
  from its latents.json; a missing one is a one-line DataError)."""
  name = config.data.name
  if name == "latent":
    return int(read_meta(config.data.path).get("num_classes", 0))
  if name not in NUM_CLASSES:
    raise ConfigError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  return NUM_CLASSES[name]


def _check_augment(config, need) -> None:
  """data.augment / augment_preset against the data kind, data.random_flip and model.augment_dim."""
  d = config.data
  need(0.0 <= d.augment <= 1.0, f"data.augment is a probability in [0, 1], got {d.augment}")
  need(d.augment_preset in aug.PRESETS,
       f"unknown data.augment_preset {d.augment_preset!r}; known: {sorted(aug.PRESETS)}")
  if d.augment == 0:
    return
  need(data_kind(config) == "images", "data.augment applies to images, not to the 2-D toy data")
  options = aug.PRESETS[d.augment_preset]
  need(not (d.random_flip and options.get("xflip", 0) > 0),
       f"data.random_flip and data.augment_preset={d.augment_preset!r} both flip images; EDM's "
       f"pipeline flips already (set data.random_flip=False)")
  want, have = aug.augment_dim(**options), config.model.get("augment_dim", None)
  need(have is not None, f"data.augment needs a network that takes augmentation labels "
       f"(model.augment_dim: song_unet, adm); {config.model.name} has none")
  need(have == want, f"model.augment_dim={have} must equal the {want} labels of data.augment_preset="
       f"{d.augment_preset!r}")


def check_data_config(config, process_count: int | None = None) -> None:
  """Raises ConfigError (one line) for the first problem of config.data with the batch size.

  Lists the files of a 'folder' data set (to count them) but reads no image.
  process_count: the number of processes (None = jax.process_count()).
  """
  d, name, gb = config.data, config.data.name, config.train.batch_size

  def need(cond, msg):
    if not cond:
      raise ConfigError(msg)

  need(name in DATASETS, f"unknown data set {name!r}; known: {sorted(DATASETS)}")
  if process_count is None:
    process_count = jax.process_count()
  need(d.read_threads >= 1, f"data.read_threads must be >= 1, got {d.read_threads}")
  need(d.prefetch >= 0, f"data.prefetch must be >= 0, got {d.prefetch}")
  if name == "folder":
    need(bool(d.path), "data.name='folder' needs data.path, the directory of training images")
    need(os.path.isdir(d.path), f"data.path {d.path!r} is not a directory")
    need(d.resolution > 0, f"data.resolution must be positive for data.name='folder' (the side the "
         f"images are cropped and resized to), got {d.resolution}")
    size = len(list_images(d.path))
    need(size > 0, f"no image files ({', '.join(image_extensions())}) under data.path {d.path!r}")
    what = f"{size} images under {d.path}"
  elif name == "latent":
    size, what = int(check_latent_config(config, need)["num_records"]), f"latents under {d.path}"
  else:
    need(not d.resolution, f"data.resolution applies only to data.name='folder'; {name} has the fixed "
         f"shape {IMAGE_SHAPES[name]} (leave data.resolution at 0)")
    size, what = _FIXED[name][2], f"{name} train split"
  need(size is None or gb <= size, f"train.batch_size {gb} exceeds the data set size {size} ({what})")
  need(gb % process_count == 0,
       f"train.batch_size {gb} is not divisible by the process count {process_count}")
  if data_kind(config) == "points":
    need(not d.random_flip, "data.random_flip applies to images, not to the 2-D toy data")
  _check_augment(config, need)
  label_dim, classes = config.model.get("label_dim", 0), num_classes(config)
  if label_dim > 0:
    need(classes > 0, f"model.label_dim={label_dim} needs class labels but data set {name!r} has none "
         f"(set model.label_dim=0)")
    need(label_dim == classes, f"model.label_dim={label_dim} must equal the {classes} classes of {name}")


def _digits(config, process_index, process_count, with_labels):
  images, labels = load_digits_split("train", with_labels=True)
  return ArraySource(images, config.train.batch_size, config.seed, process_index, process_count,
                     labels=labels, num_classes=10, with_labels=with_labels,
                     random_flip=config.data.random_flip, prefetch=config.data.prefetch)


def _toy2d(name):
  def build(config, process_index, process_count, with_labels):
    return Toy2DSource(name, config.train.batch_size, config.seed, process_index, process_count,
                       prefetch=config.data.prefetch)
  return build


def _reader_options(config, with_labels):
  d = config.data
  return dict(with_labels=with_labels, random_flip=d.random_flip, read_threads=d.read_threads,
              prefetch=d.prefetch)


def _tfds(name):
  def build(config, process_index, process_count, with_labels):
    return TfdsSource(name, config.data.data_dir, config.train.batch_size, config.seed, process_index,
                      process_count, **_reader_options(config, with_labels))
  return build


def _folder(config, process_index, process_count, with_labels):
  return FolderSource(config.data.path, config.data.resolution, config.train.batch_size, config.seed,
                      process_index, process_count, **_reader_options(config, with_labels))


def _latent(config, process_index, process_count, with_labels):
  return LatentSource(config.data.path, config.train.batch_size, config.seed, process_index,
                      process_count, sample=config.data.latent_sample,
                      **_reader_options(config, with_labels))


DATASETS = {"digits": _digits, "toy2d_gmm8": _toy2d("gmm8"), "toy2d_checkerboard": _toy2d("checkerboard"),
            "cifar10": _tfds("cifar10"), "imagenet64": _tfds("imagenet64"), "folder": _folder,
            "latent": _latent}


def build_source(config, process_index: int = 0, process_count: int = 1, with_labels: bool | None = None):
  """The training source of config.data (protocol in the module docstring).

  with_labels: batches carry 'label' (None = when config.model.label_dim > 0, which
  check_data_config requires to equal the data set's classes). Config problems and a
  missing data set raise ConfigError / DataError (a ConfigError) with one line.
  """
  check_data_config(config, process_count)
  if with_labels is None:
    with_labels = config.model.get("label_dim", 0) > 0
  if with_labels and not num_classes(config):
    raise ConfigError(f"data set {config.data.name!r} has no class labels")
  return DATASETS[config.data.name](config, process_index, process_count, with_labels)
