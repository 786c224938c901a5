"""Full-size images with labels, read by index for `--mode encode`: ADM's centre crop, a folder of
class sub-folders (ImageNet's train/ layout) or a TFDS image data set (e.g. imagenet2012).

The crop is ADM's `center_crop_arr` (openai/guided-diffusion image_datasets.py), which DiT's
train.py (facebookresearch/DiT) and MeanFlow's input pipeline (Gsunshine/meanflow
utils/input_pipeline.py) copy: while the short side is >= 2 * size, halve the image with a BOX
filter; then a BICUBIC resize so that the short side is `size` (each side round(side * scale));
then the centre size x size crop (offsets floor((side - size) / 2)).
"""
from __future__ import annotations

import os

import numpy as np

from cmjax import images
from cmjax.data.folder import image_extensions, list_images
from cmjax.data.pipeline import DataError, first_line


def center_crop_arr(pil_image, image_size: int) -> np.ndarray:
  """ADM's centre crop of a PIL RGB image -> (image_size, image_size, 3) uint8 (module docstring)."""
  from PIL import Image

  while min(*pil_image.size) >= 2 * image_size:
    pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
  scale = image_size / min(*pil_image.size)
  pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size),
                               resample=Image.BICUBIC)
  arr = np.array(pil_image)
  crop_y, crop_x = (arr.shape[0] - image_size) // 2, (arr.shape[1] - image_size) // 2
  return arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size]


def _to_pil(u8: np.ndarray):
  from PIL import Image
  u8 = np.asarray(u8, np.uint8)
  if u8.ndim == 3 and u8.shape[-1] == 1:
    u8 = u8[..., 0]
  return Image.fromarray(u8).convert("RGB")


class FolderImages:
  """The image files under `path` (sorted, `cmjax.data.folder.list_images`); with
  labels='subfolders' record i's label is the index of its top-level folder among the sorted
  folder names (torchvision ImageFolder, as DiT and MeanFlow read ImageNet), else 0 (no classes).

  Attributes: files, labels (N,) int32, num_classes, class_names, what."""

  def __init__(self, path: str, labels: str = "subfolders"):
    if not path or not os.path.isdir(path):
      raise DataError(f"encode.path {path!r} is not a directory of images")
    if labels not in ("subfolders", "none"):
      raise DataError(f"encode.labels must be 'subfolders' or 'none', got {labels!r}")
    self.files = list_images(path)
    if not self.files:
      raise DataError(f"no image files ({', '.join(image_extensions())}) under encode.path "
                      f"{path!r}: encode reads images")
    self.class_names: list[str] = []
    self.labels = np.zeros(len(self.files), np.int32)
    if labels == "subfolders":
      tops = [os.path.relpath(f, path).split(os.sep) for f in self.files]
      loose = [os.sep.join(t) for t in tops if len(t) == 1]
      if loose:
        raise DataError(f"encode.labels='subfolders' but {loose[0]!r} lies directly in {path} "
                        f"(one folder per class expected; or set encode.labels='none')")
      self.class_names = sorted({t[0] for t in tops})
      index = {c: i for i, c in enumerate(self.class_names)}
      self.labels = np.array([index[t[0]] for t in tops], np.int32)
    self.num_classes = len(self.class_names)
    self.what = f"{len(self.files)} images under {path} ({self.num_classes} classes)"

  def __len__(self) -> int:
    return len(self.files)

  def read(self, i: int, size: int) -> tuple[np.ndarray, int]:
    """(ADM centre crop (size, size, 3) uint8, label) of image i; DataError naming a bad file."""
    u8 = images.unit_to_uint8(images.load_image(self.files[int(i)], 3))
    return center_crop_arr(_to_pil(u8), size), int(self.labels[int(i)])


class TfdsImages:
  """The train split of TFDS data set `name` (prepared as array_record under data_dir), read by
  index; its feature 'image' must be an image (DataError otherwise: encode reads images) and its
  'label', when present, a ClassLabel."""

  def __init__(self, name: str, data_dir: str = ""):
    try:
      import tensorflow_datasets as tfds
    except ImportError as e:
      raise DataError(f"encode.source='tfds' needs tensorflow-datasets ({e})") from None
    if not name:
      raise DataError("encode.source='tfds' needs encode.tfds_name (e.g. 'imagenet2012')")
    try:
      self.source = tfds.data_source(name, split="train", data_dir=data_dir or None, download=False)
      features = self.source.dataset_info.features
    except Exception as e:  # noqa: BLE001 - not prepared, not array_record, unknown name
      raise DataError(f"cannot open TFDS data set {name!r} (train split, array_record) under "
                      f"{data_dir or 'the default data_dir'}: {first_line(e)}") from None
    image = features["image"] if "image" in features else None
    if image is None or not isinstance(image, tfds.features.Image):
      raise DataError(f"TFDS data set {name!r} has no 'image' feature of images "
                      f"(features: {sorted(features)}): encode reads images")
    label = features["label"] if "label" in features else None
    self.num_classes = int(label.num_classes) if isinstance(label, tfds.features.ClassLabel) else 0
    self.what = f"TFDS {name} train ({len(self.source)} records, {self.num_classes} classes)"

  def __len__(self) -> int:
    return len(self.source)

  def read(self, i: int, size: int) -> tuple[np.ndarray, int]:
    rec = self.source[int(i)]
    label = int(rec["label"]) if self.num_classes else 0
    return center_crop_arr(_to_pil(np.asarray(rec["image"])), size), label


def open_images(encode) -> FolderImages | TfdsImages:
  """The images `--mode encode` reads, from config.encode (source 'folder' or 'tfds')."""
  if encode.source == "folder":
    return FolderImages(encode.path, encode.labels)
  if encode.source == "tfds":
    return TfdsImages(encode.tfds_name, encode.data_dir)
  raise DataError(f"encode.source must be 'folder' or 'tfds' (a data set of images), got "
                  f"{encode.source!r}")
