"""FID reference statistics stream over a whole training set: the chunked statistics equal the
one-shot ones, and the TFDS reader yields every training image once, in [-1, 1]."""
import numpy as np
import pytest

from cmjax.modes.evaluate import StreamingStatistics, training_image_chunks
from cmjax.evaluation.frechet import feature_statistics


def test_streaming_statistics_equal_one_shot():
  f = np.random.default_rng(0).normal(size=(50, 6)) * np.arange(1, 7) + 3.0
  s = StreamingStatistics(keep=20)
  for part in (f[:7], f[7:30], f[30:]):
    s.add(part)
  out = s.result()
  mu, sigma = feature_statistics(f)
  np.testing.assert_allclose(out["mu"], mu, rtol=1e-12)
  np.testing.assert_allclose(out["sigma"], sigma, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(out["features"], f[:20].astype(np.float32))


def test_training_chunks_cover_a_tfds_split_once():
  tfds = pytest.importorskip("tensorflow_datasets")
  from configs import cifar10_ect

  c = cifar10_ect.get_config("smoke")
  with tfds.testing.mock_data(num_examples=25):
    chunks = list(training_image_chunks(c, chunk=10))
    src = tfds.data_source("cifar10", split="train")
    direct = np.stack([src[i]["image"] for i in range(25)]).astype(np.float32) / 127.5 - 1.0
  assert [len(x) for x in chunks] == [10, 10, 5]
  got = np.concatenate(chunks)
  assert got.shape == (25, 32, 32, 3) and got.min() >= -1.0 and got.max() <= 1.0
  key = lambda a: np.sort(a.reshape(len(a), -1).sum(1))  # noqa: E731 (the same multiset)
  np.testing.assert_allclose(key(got), key(direct), rtol=1e-6)
