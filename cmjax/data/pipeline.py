"""The batch logic shared by every indexed training source, and the read-ahead iterator.

An indexed source holds N records (an in-memory array, a TFDS array_record
split, the image files of a folder). Its batches are a pure function of the
step:

  epoch e = step // steps_per_epoch reads the records in the order of the
  permutation default_rng([seed, e]) of range(N); step s takes the
  (s mod steps_per_epoch)-th run of global_batch records of it (the
  N mod global_batch records left over are dropped that epoch), and process p
  of P reads only its contiguous slice [p * local_batch, (p + 1) * local_batch)
  of that run, so each host reads only its own records.

The data position is therefore the step: a resumed run reads exactly the batch
it would have read, and any number of processes see the same global batch.
`iterate(start)` yields the same values as `batch(start)`, `batch(start + 1)`,
... but reads ahead in background threads (grain); results are gathered in
order, so they do not depend on the thread count.

Random flips (data.random_flip): example k of the global batch of step s is
mirrored left-right when default_rng([seed, _FLIP_STREAM, s]).random(global_batch)[k]
< 1/2, which depends only on (seed, step, k): resumed runs and any process
count flip the same examples.
"""
from __future__ import annotations

import threading

import numpy as np

from cmjax.errors import DataError  # noqa: F401 - re-exported

_END = 1 << 40  # iterate() is endless in practice: this many steps past its start
_FLIP_STREAM = 0x666C6970  # 'flip': keeps the flip draws apart from the epoch permutations


def import_grain():
  try:
    import grain
  except ImportError as e:
    raise DataError(f"reading training data needs grain ({e}); pip install grain") from None
  return grain


def first_line(e: BaseException) -> str:
  """The first non-empty line of an exception's message (or its type name)."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  return lines[0] if lines else type(e).__name__


class BatchIterator:
  """Yields source.batch(start), source.batch(start + 1), ... read ahead in threads.

  Attributes:
    step: the step of the batch that the next `next()` returns.

  `close()` (or leaving a `with` block) stops and joins the reading threads;
  an error raised while reading a record (e.g. DataError for a corrupt image)
  is raised by the `next()` that needs that record.
  """

  def __init__(self, grain_iterator, start_step: int):
    self._it = grain_iterator
    self.step = int(start_step)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    if self._it is None:
      raise ValueError("the batch iterator is closed")
    out = next(self._it)
    self.step += 1
    return out

  def close(self) -> None:
    it, self._it = self._it, None
    close = getattr(it, "close", None)  # grain < 0.2.14 (Python 3.10) has no close(): the
    if close is not None:               # dropped iterator's threads end when it is collected
      close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # interpreter shutdown: modules may already be gone
      pass


def iterate_batches(batch_fn, start_step: int, prefetch: int) -> BatchIterator:
  """batch_fn(start_step), batch_fn(start_step + 1), ...: `prefetch` batches made ahead in one thread."""
  grain = import_grain()
  ds = grain.MapDataset.range(int(start_step), int(start_step) + _END).map(batch_fn)
  opts = grain.ReadOptions(num_threads=1 if prefetch > 0 else 0, prefetch_buffer_size=max(int(prefetch), 0))
  return BatchIterator(iter(ds.to_iter_dataset(opts)), start_step)


class IndexedSource:
  """Epoch-shuffled batches of N indexed records, as a pure function of the step (module docstring).

  Subclasses implement `read_record(i) -> (image, label)`: image (H, W, C)
  uint8 in [0, 255] (scaled to float32 x / 127.5 - 1) or float32 already in
  [-1, 1]; label an int (ignored when the data set has no labels). They may
  override `read_records(indices)` to read a whole batch at once.

  Attributes:
    num_records: N. global_batch, local_batch (= global_batch // process_count).
    steps_per_epoch: N // global_batch.
    image_shape: (H, W, C) of one example. num_classes: classes of the data set (0 = none).
    with_labels: batches carry 'label' (num_classes > 0 and asked for).
    random_flip, read_threads, prefetch: as in config.data.
  """

  records_in_parallel = True  # iterate() reads chunks of records in read_threads threads

  def __init__(self, num_records: int, global_batch: int, seed: int, process_index: int = 0,
               process_count: int = 1, *, image_shape: tuple, num_classes: int = 0,
               with_labels: bool = False, random_flip: bool = False, read_threads: int = 1,
               prefetch: int = 0, what: str = "the data set"):
    if global_batch > num_records:
      raise DataError(f"batch size {global_batch} exceeds the data set size {num_records} ({what})")
    if global_batch % process_count:
      raise DataError(f"batch size {global_batch} is not divisible by the process count {process_count}")
    if with_labels and num_classes <= 0:
      raise DataError(f"{what} has no class labels")
    self.num_records = int(num_records)
    self.global_batch = int(global_batch)
    self.seed = int(seed)
    self.local_batch = self.global_batch // process_count
    self.offset = process_index * self.local_batch
    self.steps_per_epoch = self.num_records // self.global_batch
    self.image_shape = tuple(image_shape)
    self.num_classes = int(num_classes)
    self.with_labels = bool(with_labels)
    self.random_flip = bool(random_flip)
    self.read_threads = max(int(read_threads), 1)
    self.prefetch = max(int(prefetch), 0)
    self._perms: dict[int, np.ndarray] = {}
    self._lock = threading.Lock()

  # ---- which records ----------------------------------------------------------------------
  def permutation(self, epoch: int) -> np.ndarray:
    """The record order of `epoch`: default_rng([seed, epoch]).permutation(N) (the last 2 are cached)."""
    with self._lock:
      perm = self._perms.get(epoch)
    if perm is None:
      perm = np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_records)
      with self._lock:
        self._perms[epoch] = perm
        for e in sorted(self._perms)[:-2]:
          del self._perms[e]
    return perm

  def record_indices(self, step: int) -> np.ndarray:
    """(local_batch,) int: the records this process reads at global step `step`."""
    epoch, pos = divmod(int(step), self.steps_per_epoch)
    start = pos * self.global_batch + self.offset
    return self.permutation(epoch)[start:start + self.local_batch]

  def flips(self, step: int) -> np.ndarray:
    """(local_batch,) bool: which examples of this process's batch of `step` are mirrored."""
    draws = np.random.default_rng([self.seed, _FLIP_STREAM, int(step)]).random(self.global_batch)
    return draws[self.offset:self.offset + self.local_batch] < 0.5

  # ---- reading ----------------------------------------------------------------------------
  def read_record(self, index: int):
    raise NotImplementedError

  def read_records(self, indices: np.ndarray):
    """(images (n, H, W, C), labels (n,) int32) of the records `indices`, read one by one."""
    pairs = [self.read_record(int(i)) for i in indices]
    return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs], np.int32)

  def assemble(self, step: int, images: np.ndarray, labels) -> dict:
    """The batch dict of `step` from its raw records: float32 [-1, 1], flipped, labels if asked."""
    if images.dtype == np.float32:
      x = images
    else:  # x / 127.5 - 1, in place
      x = images.astype(np.float32)
      x /= 127.5
      x -= 1.0
    if self.random_flip:
      f = self.flips(step)
      x = x.copy() if x is images else x  # never mirror the caller's array
      x[f] = x[f, :, ::-1]
    out = {"image": x}
    if self.with_labels:
      out["label"] = np.asarray(labels, np.int32)
    return out

  def batch(self, step: int) -> dict:
    """{'image': (local_batch, H, W, C) float32 in [-1, 1], 'label': (local_batch,) int32 (if
    with_labels)} of global step `step`; reads only this process's records."""
    return self.assemble(step, *self.read_records(self.record_indices(step)))

  @property
  def chunk(self) -> int:
    """Records one reading task reads in a row: about 4 tasks per thread per batch (grain's
    per-task cost, ~50 us, is then small against decoding)."""
    return max(1, self.local_batch // (4 * self.read_threads))

  def _read_chunk(self, task: int):
    """Task t of the stream: chunk c of step s, (step, images, labels)."""
    per_step = -(-self.local_batch // self.chunk)
    step, c = divmod(int(task), per_step)
    images, labels = self.read_records(self.record_indices(step)[c * self.chunk:(c + 1) * self.chunk])
    return step, images, labels

  def _collate(self, chunks) -> dict:
    return self.assemble(chunks[0][0], np.concatenate([c[1] for c in chunks]),
                         np.concatenate([c[2] for c in chunks]))

  def iterate(self, start_step: int = 0) -> BatchIterator:
    """batch(start_step), batch(start_step + 1), ... (the same values), read ahead in threads.

    `read_threads` grain threads read and decode chunks of `chunk` records
    (results gathered in order, so the thread count does not change the data);
    one more thread assembles batches and keeps `prefetch` of them ready
    (prefetch = 0: batches are assembled in the caller's `next()`). Close the
    iterator when done.
    """
    if not self.records_in_parallel:
      return iterate_batches(self.batch, start_step, self.prefetch)
    grain = import_grain()
    per_step, start = -(-self.local_batch // self.chunk), int(start_step)
    ds = grain.MapDataset.range(start * per_step, (start + _END) * per_step).map(self._read_chunk)
    # A small task buffer: grain scans it on every element (a buffer of thousands is slow).
    opts = grain.ReadOptions(num_threads=self.read_threads, prefetch_buffer_size=2 * self.read_threads)
    ds = ds.to_iter_dataset(opts).batch(per_step, drop_remainder=True, batch_fn=self._collate)
    if self.prefetch > 0:
      ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=self.prefetch)
    return BatchIterator(iter(ds), start)


class ArraySource(IndexedSource):
  """Epoch-shuffled batches from in-memory arrays (the digits), as a pure function of the step.

  Epoch e uses permutation default_rng([seed, e]); within an epoch, step s takes
  the (s mod steps_per_epoch)-th slice of global_batch examples (the remainder is
  dropped). Each process takes its contiguous slice of every global batch.

  Args:
    images: (N, H, W, C) float32 in [-1, 1].
    labels: (N,) int, or None (then batches never carry 'label').
    with_labels: add 'label' (local_batch,) int32 to every batch (needs labels).
  """

  records_in_parallel = False  # fancy indexing reads a batch at once; iterate() prefetches batches

  def __init__(self, images: np.ndarray, global_batch: int, seed: int, process_index: int = 0,
               process_count: int = 1, *, labels: np.ndarray | None = None, num_classes: int = 0,
               with_labels: bool = False, random_flip: bool = False, prefetch: int = 0):
    if labels is not None and not num_classes:
      num_classes = int(np.max(labels)) + 1
    super().__init__(len(images), global_batch, seed, process_index, process_count,
                     image_shape=images.shape[1:], num_classes=num_classes if labels is not None else 0,
                     with_labels=with_labels, random_flip=random_flip, prefetch=prefetch)
    self.images = images
    self.labels = labels

  def read_records(self, indices: np.ndarray):
    return self.images[indices], (None if self.labels is None else self.labels[indices])

  def read_record(self, index: int):
    return self.images[index], (0 if self.labels is None else int(self.labels[index]))
