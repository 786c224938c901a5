"""TFDS data sets read with `tfds.data_source` (array_record, random access, no TensorFlow).

'cifar10' is TFDS 'cifar10' (train split: 50,000 images 32x32x3, 10 classes);
'imagenet64' is TFDS 'imagenet_resized/64x64' (train split: 1,281,167 images
64x64x3, 1000 classes; Chrabaszcz et al.'s box-resized ImageNet). Records are
{'image': (H, W, 3) uint8, 'label': int64}; images become float32 x / 127.5 - 1.

Preparing the data (once per machine or shared data_dir). Reading needs only
tensorflow-datasets, array_record and grain, but *building* a TFDS data set
encodes its images with TensorFlow (tfds.features.Image calls
tf.image.encode_png, and the CIFAR builder reads its archive with
tf.io.gfile), so install the optional extra `prepare` (= tensorflow) for that
step and build in the array_record format (the TFDS default, tfrecord, has no
random access):

  pip install -e '.[prepare]'          # or: pip install tensorflow
  tfds build cifar10 --file_format=array_record --data_dir=DATA_DIR

ImageNet-resized cannot be downloaded automatically (image-net.org needs a
login): download Imagenet64_train_part1_npz.zip, Imagenet64_train_part2_npz.zip
and Imagenet64_val_npz.zip from image-net.org ("Download downsampled image
data", 64x64) into MANUAL_DIR, then

  tfds build imagenet_resized/64x64 --file_format=array_record --manual_dir=MANUAL_DIR --data_dir=DATA_DIR

and train with data.data_dir=DATA_DIR ('' = TFDS's default: $TFDS_DATA_DIR or
~/tensorflow_datasets). A data set already built as tfrecord can be converted
with `tfds convert_format` (also needs TensorFlow).
"""
from __future__ import annotations

import numpy as np

from cmjax.data.pipeline import DataError, IndexedSource, first_line

# config name -> (TFDS name, image shape, classes, train split size)
TFDS_DATASETS = {
    "cifar10": ("cifar10", (32, 32, 3), 10, 50_000),
    "imagenet64": ("imagenet_resized/64x64", (64, 64, 3), 1000, 1_281_167),
}


def prepare_hint(name: str, data_dir: str) -> str:
  """The commands that prepare TFDS data set `name` (a config name) under `data_dir`, in one line."""
  tfds_name = TFDS_DATASETS[name][0]
  dd = f" --data_dir={data_dir}" if data_dir else ""
  manual = " --manual_dir=DIR" if name == "imagenet64" else ""
  hint = (f"prepare it once with: pip install tensorflow && tfds build {tfds_name} "
          f"--file_format=array_record{manual}{dd}")
  if name == "imagenet64":
    hint += (" (DIR holds Imagenet64_train_part1_npz.zip, Imagenet64_train_part2_npz.zip and "
             "Imagenet64_val_npz.zip, downloaded by hand from image-net.org)")
  return hint


def open_tfds(name: str, data_dir: str = ""):
  """tfds.data_source of the train split of config data set `name`; a missing data set is one line."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataError(f"data.name={name!r} needs tensorflow-datasets ({e}); "
                    f"pip install tensorflow-datasets grain") from None
  tfds_name = TFDS_DATASETS[name][0]
  where = data_dir or "TFDS's default data_dir ($TFDS_DATA_DIR or ~/tensorflow_datasets)"
  try:
    return tfds.data_source(tfds_name, split="train", data_dir=data_dir or None, download=False)
  except Exception as e:  # not prepared, prepared as tfrecord, unreadable metadata, ...
    error = e
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
    prepared, version_dir = builder.is_prepared(), str(builder.data_dir)
  except Exception:
    prepared, version_dir = False, ""
  if not prepared:
    raise DataError(f"TFDS data set {tfds_name!r} is not prepared under {where}; "
                    f"{prepare_hint(name, data_dir)}")
  raise DataError(f"TFDS data set {tfds_name!r} at {version_dir} cannot be read as array_record "
                  f"({first_line(error)}); rebuild it with --file_format=array_record or convert it: "
                  f"tfds convert_format --dataset_dir={version_dir} --out_file_format=array_record "
                  f"(both need TensorFlow)")


class TfdsSource(IndexedSource):
  """Epoch-shuffled batches of a TFDS train split (cmjax.data.pipeline.IndexedSource).

  Args:
    name: 'cifar10' or 'imagenet64'. data_dir: the TFDS data_dir ('' = default).
    the rest: as IndexedSource. Each process reads only its records of each step.
  """

  def __init__(self, name: str, data_dir: str, global_batch: int, seed: int,
               process_index: int = 0, process_count: int = 1, **kw):
    self.name = name
    self.source = open_tfds(name, data_dir)
    tfds_name, shape, classes, _ = TFDS_DATASETS[name]
    super().__init__(len(self.source), global_batch, seed, process_index, process_count,
                     image_shape=shape, num_classes=classes, what=f"TFDS {tfds_name} train", **kw)

  def read_record(self, index: int):
    """(image (H, W, 3) uint8, label int) of record `index`."""
    rec = self.source[int(index)]
    image = np.asarray(rec["image"])
    if image.shape != self.image_shape or image.dtype != np.uint8:
      raise DataError(f"TFDS {self.name} record {index} has an image of shape {image.shape} "
                      f"{image.dtype}; expected {self.image_shape} uint8")
    return image, int(rec["label"])
