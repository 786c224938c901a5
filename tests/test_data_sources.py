"""Training data sources: TFDS (mocked), image folders, digits; determinism, resume, sharding, flips."""
import os
import threading
import time

import numpy as np
import pytest
from PIL import Image

from cmjax import config_base
from cmjax.config_validation import ConfigError
from cmjax.data import (DATASETS, IMAGE_SHAPES, DataError, IndexedSource, build_source, check_data_config,
                        image_shape, num_classes)
from cmjax.data.digits import load_digits_split
from cmjax.data.folder import load_image

tfds = pytest.importorskip("tensorflow_datasets")
mock_data = pytest.importorskip("tensorflow_datasets.testing").mock_data


def _config(name, batch=8, **data):
  c = config_base.get_config()
  c.data.name = name
  c.train.batch_size = batch
  c.data.update(data)
  return c


def _same(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _check_iterate(source, steps=(0, 1, 5, 7)):
  """batch(s) == the s-th item of iterate(0) == the first item of iterate(s)."""
  with source.iterate(0) as it:
    seq = [next(it) for _ in range(max(steps) + 1)]
  for s in steps:
    _same(seq[s], source.batch(s))
    with source.iterate(s) as it:
      _same(next(it), source.batch(s))


def _check_two_processes(config, steps=(0, 3, 6)):
  full = build_source(config)
  halves = [build_source(config, p, 2) for p in range(2)]
  read = [[], []]
  for p, h in enumerate(halves):  # count what each process reads
    orig = h.read_record
    h.read_record = lambda i, orig=orig, p=p: (read[p].append(int(i)), orig(i))[1]
  for s in steps:
    parts = [h.batch(s) for h in halves]
    _same({k: np.concatenate([b[k] for b in parts]) for k in parts[0]}, full.batch(s))
  for p, h in enumerate(halves):
    assert read[p] == [int(i) for s in steps for i in h.record_indices(s)]
    assert len(read[p]) == len(steps) * full.local_batch // 2
  for s in steps:
    assert not set(halves[0].record_indices(s)) & set(halves[1].record_indices(s))


@pytest.mark.parametrize("name,tfds_shape,classes",
                         [("cifar10", (32, 32, 3), 10), ("imagenet64", (64, 64, 3), 1000)])
def test_tfds_batches(name, tfds_shape, classes):
  cfg = _config(name, batch=8, read_threads=2)
  cfg.model.label_dim = classes
  with mock_data(num_examples=20):
    source = build_source(cfg)
    b = source.batch(1)
  assert image_shape(cfg) == source.image_shape == IMAGE_SHAPES[name] == tfds_shape
  assert num_classes(cfg) == source.num_classes == classes and source.steps_per_epoch == 2
  assert b["image"].shape == (8,) + tfds_shape and b["image"].dtype == np.float32
  assert -1.0 <= b["image"].min() < b["image"].max() <= 1.0
  assert b["label"].shape == (8,) and b["label"].dtype == np.int32
  assert 0 <= b["label"].min() and b["label"].max() < classes
  cfg.model.label_dim = 0
  with mock_data(num_examples=20):
    assert sorted(build_source(cfg).batch(1)) == ["image"]


def test_tfds_resume_and_processes():
  cfg = _config("cifar10", batch=8, read_threads=3, prefetch=2, random_flip=True)
  cfg.model.label_dim = 10
  with mock_data(num_examples=36):
    source = build_source(cfg)
    _check_iterate(source)
    _check_two_processes(cfg)
    cfg.data.read_threads, cfg.data.prefetch = 1, 0  # thread counts do not change the data
    _check_iterate(build_source(cfg), steps=(0, 4))
    with source.iterate(0) as it:
      _same(next(it), build_source(cfg).batch(0))


def test_missing_tfds_dataset_is_one_line(tmp_path):
  cfg = _config("cifar10", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(DataError) as e:
    build_source(cfg)
  msg = str(e.value)
  assert "\n" not in msg and "not prepared" in msg
  assert f"tfds build cifar10 --file_format=array_record --data_dir={tmp_path / 'tfds'}" in msg
  cfg = _config("imagenet64", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(DataError, match="imagenet_resized/64x64.*manual_dir.*Imagenet64_train_part1_npz.zip"):
    build_source(cfg)


class _Numbered(IndexedSource):
  """Record i is a (4, 4, 1) image whose first column holds i and the rest -i: asymmetric."""

  def __init__(self, n, batch, **kw):
    super().__init__(n, batch, 3, image_shape=(4, 4, 1), num_classes=n, **kw)

  def read_record(self, i):
    x = np.full((4, 4, 1), -float(i), np.float32)
    x[:, 0] = i
    return x / 1000.0, i


@pytest.mark.parametrize("n", [40, 43])
def test_epochs_cover_every_record_once(n):
  s = _Numbered(n, 8, with_labels=True)
  assert s.steps_per_epoch == n // 8
  epochs = [np.concatenate([s.batch(e * s.steps_per_epoch + k)["label"] for k in range(s.steps_per_epoch)])
            for e in range(2)]
  for seen in epochs:
    assert len(set(seen.tolist())) == len(seen) == n - n % 8  # each at most once; 40: all of them
  assert not np.array_equal(epochs[0], epochs[1])  # a new epoch, a new order
  np.testing.assert_array_equal(s.batch(0)["image"][:, 0, 0, 0] * 1000, s.batch(0)["label"])


@pytest.mark.parametrize("threads,prefetch", [(1, 2), (3, 0)])
def test_chunked_reads_equal_batches(threads, prefetch):
  s = _Numbered(100, 30, with_labels=True, random_flip=True, read_threads=threads, prefetch=prefetch)
  assert s.chunk == (7 if threads == 1 else 2)  # 30 = 4 x 7 + 2: a short last chunk
  _check_iterate(s, steps=(0, 2, 3, 4))  # 3 steps per epoch: crosses two epochs


def test_random_flip():
  plain = _Numbered(600, 256, with_labels=True)
  flip = _Numbered(600, 256, with_labels=True, random_flip=True)
  for step in (0, 3):
    a, b = plain.batch(step)["image"], flip.batch(step)["image"]
    flipped = ~np.all(a == b, axis=(1, 2, 3))
    assert 0.35 < flipped.mean() < 0.65
    np.testing.assert_array_equal(b[flipped], a[flipped][:, :, ::-1])
    np.testing.assert_array_equal(flipped, flip.flips(step))
    _same(flip.batch(step), _Numbered(600, 256, with_labels=True, random_flip=True).batch(step))
    halves = [_Numbered(600, 256, random_flip=True, process_index=p, process_count=4) for p in range(4)]
    np.testing.assert_array_equal(np.concatenate([h.batch(step)["image"] for h in halves]), b)
  assert not np.array_equal(flip.flips(0), flip.flips(1))


def _write_folder(root):
  """Six images of different sizes and modes (RGB, grey, RGBA; PNG and JPEG) in nested folders."""
  rng = np.random.default_rng(0)
  os.makedirs(root / "sub" / "deeper")
  Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / "a.png")
  Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / "b_gray.png")
  Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "sub" / "c.PNG")
  Image.fromarray(rng.integers(0, 256, (30, 10, 3), dtype=np.uint8)).save(root / "sub" / "d.jpg")
  Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(root / "sub" / "deeper" / "e.jpeg")
  rgba = rng.integers(0, 256, (8, 8, 4), dtype=np.uint8)
  Image.fromarray(rgba).save(root / "sub" / "deeper" / "f.png")
  (root / "notes.txt").write_text("not an image")


def test_folder_decoding(tmp_path):
  _write_folder(tmp_path)
  cfg = _config("folder", batch=4, path=str(tmp_path), resolution=8, read_threads=2, prefetch=1)
  check_data_config(cfg, 1)
  s = build_source(cfg)
  assert [os.path.relpath(f, tmp_path) for f in s.files] == [
      "a.png", "b_gray.png", "sub/c.PNG", "sub/d.jpg", "sub/deeper/e.jpeg", "sub/deeper/f.png"]
  assert s.image_shape == image_shape(cfg) == (8, 8, 3) and s.num_classes == num_classes(cfg) == 0
  a = np.asarray(Image.open(tmp_path / "a.png"))
  expect = np.asarray(Image.fromarray(a[:, 4:16]).resize((8, 8), Image.LANCZOS))  # centre crop, then resize
  np.testing.assert_array_equal(load_image(s.files[0], 8), expect)
  gray = load_image(s.files[1], 8)
  assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 0], gray[..., 2])
  np.testing.assert_array_equal(load_image(s.files[2], 8), np.asarray(Image.open(s.files[2])))  # 8x8: as is
  assert load_image(s.files[3], 5).shape == (5, 5, 3)
  b = s.batch(0)
  assert sorted(b) == ["image"] and b["image"].shape == (4, 8, 8, 3) and b["image"].dtype == np.float32
  expect = np.stack([load_image(s.files[i], 8) for i in s.record_indices(0)]) / 127.5 - 1.0
  np.testing.assert_allclose(b["image"], expect, atol=1e-6)
  _check_iterate(s, steps=(0, 1, 3))
  _check_two_processes(cfg, steps=(0, 1, 2))


def test_folder_corrupt_file_names_it(tmp_path):
  Image.new("RGB", (8, 8)).save(tmp_path / "good.png")
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
  cfg = _config("folder", batch=2, path=str(tmp_path), resolution=4)
  s = build_source(cfg)
  with pytest.raises(DataError) as e:
    s.batch(0)
  assert "\n" not in str(e.value) and str(tmp_path / "bad.png") in str(e.value)
  with pytest.raises(DataError, match="bad.png"), s.iterate(0) as it:
    next(it)


def test_check_data_config_errors(tmp_path):
  def fails(cfg, match, processes=1):
    with pytest.raises(ConfigError, match=match) as e:
      check_data_config(cfg, processes)
    assert "\n" not in str(e.value)

  fails(_config("folder", resolution=8), "needs data.path")
  fails(_config("folder", path=str(tmp_path / "nope"), resolution=8), "is not a directory")
  fails(_config("folder", path=str(tmp_path), resolution=0), "resolution must be positive")
  (tmp_path / "readme.txt").write_text("x")
  fails(_config("folder", path=str(tmp_path), resolution=8), "no image files")
  fails(_config("cifar10", resolution=32), "applies only to data.name='folder'")
  fails(_config("digits", batch=2000), "exceeds the data set size 1437")
  fails(_config("cifar10", batch=60_000), "exceeds the data set size 50000")
  fails(_config("cifar10", batch=12), "not divisible by the process count 8", processes=8)
  fails(_config("toy2d_gmm8", random_flip=True), "random_flip")
  fails(_config("cifar10", read_threads=0), "read_threads")
  cfg = _config("toy2d_gmm8")
  cfg.model.label_dim = 10
  fails(cfg, "has none")
  cfg = _config("cifar10")
  cfg.model.label_dim = 1000
  fails(cfg, "must equal the 10 classes")
  fails(_config("mnist"), "unknown data set")


def test_shapes_and_classes_without_data():
  assert set(DATASETS) == {"digits", "toy2d_gmm8", "toy2d_checkerboard", "cifar10", "imagenet64", "folder",
                           "latent"}
  assert image_shape(_config("latent", resolution=256)) == (32, 32, 4)  # classes: tests/test_latent.py
  expect = {"digits": ((8, 8, 1), 10), "toy2d_gmm8": ((2,), 0), "toy2d_checkerboard": ((2,), 0),
            "cifar10": ((32, 32, 3), 10), "imagenet64": ((64, 64, 3), 1000), "folder": ((24, 24, 3), 0)}
  for name, (shape, classes) in expect.items():
    cfg = _config(name, resolution=24 if name == "folder" else 0)
    assert image_shape(cfg) == shape and num_classes(cfg) == classes


def test_digits_unchanged_and_labelled():
  cfg = _config("digits", batch=64, prefetch=2)
  images, labels = load_digits_split("train", with_labels=True)
  assert np.array_equal(images, load_digits_split("train"))
  plain, labelled = build_source(cfg), build_source(cfg, with_labels=True)
  cfg.model.label_dim = 10
  assert build_source(cfg).with_labels and not plain.with_labels
  assert plain.steps_per_epoch == len(images) // 64
  for step in (0, 7, 22, 23, 60):  # the pre-existing ArraySource order, bit for bit
    epoch, pos = divmod(step, plain.steps_per_epoch)
    idx = np.random.default_rng([cfg.seed, epoch]).permutation(len(images))[pos * 64:(pos + 1) * 64]
    b = plain.batch(step)
    assert sorted(b) == ["image"] and b["image"].dtype == np.float32
    assert np.array_equal(b["image"], images[idx])
    lb = labelled.batch(step)
    assert np.array_equal(lb["image"], images[idx]) and np.array_equal(lb["label"], labels[idx])
    assert lb["label"].dtype == np.int32
  _check_iterate(labelled, steps=(0, 22, 23))


def test_iterators_close_their_threads():
  before = set(threading.enumerate())  # (threads of iterators other tests left open are not ours)
  sources = [build_source(_config("toy2d_gmm8", batch=16, prefetch=3)),
             _Numbered(64, 8, read_threads=4, prefetch=2)]
  for s in sources:
    _check_iterate(s, steps=(0, 2))
    it = s.iterate(5)
    assert it.step == 5
    next(it)
    assert it.step == 6 and set(threading.enumerate()) - before
    it.close()
    with pytest.raises(ValueError, match="closed"):
      next(it)
    deadline = time.time() + 10
    while set(threading.enumerate()) - before and time.time() < deadline:
      time.sleep(0.05)
    assert not set(threading.enumerate()) - before
