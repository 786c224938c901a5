"""`--mode eval`: metrics of a trained run's samplers, appended to WORKDIR/eval.json.

For every sampler of the run (1 and 2 steps, or the ODE of a diffusion model):
  digits      digits-FD (eval.num_samples) and improved precision/recall (k = eval.pr_k) on the
              digits classifier's features against the train split;
  2-D data    sliced Wasserstein, modes covered (and, on the 8 Gaussians, the consistency error);
  FID         when eval.fid_weights names converted Inception weights
              (scripts/convert_inception_weights.py): FID of eval.fid_num_samples samples (50,000
              as in the papers) against eval.fid_reference, plus precision/recall on the same
              features. The reference .npz (mu, sigma, and up to 50,000 features) is computed
              from all the run's training images (digits, TFDS cifar10 / imagenet64, or a
              folder; streamed through the data source) the first time and cached at that path.
Sampling and feature extraction run jitted over the device mesh (batches split over devices);
each record reports their img/s.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from cmjax.config_validation import ConfigError
from cmjax.run_logging import write_json_atomic

MAX_REFERENCE_FEATURES = 50_000  # kept in the reference .npz for precision/recall


def check_eval_config(config) -> None:
  """One-line ConfigErrors for the eval-mode fields, before anything is compiled."""
  e = config.eval
  if e.fid_weights and not os.path.isfile(e.fid_weights):
    raise ConfigError(f"eval.fid_weights: no file {e.fid_weights!r} (convert the Inception weights "
                      f"with scripts/convert_inception_weights.py)")
  if e.fid_weights and not e.fid_reference:
    raise ConfigError("eval.fid_reference must name the reference statistics .npz (it is computed "
                      "and cached there when missing)")
  if e.fid_num_samples < 2 or e.pr_k < 1:
    raise ConfigError(f"eval.fid_num_samples must be >= 2 and eval.pr_k >= 1 (got "
                      f"{e.fid_num_samples}, {e.pr_k})")


def sharded_features(feature_fn, images: np.ndarray, batch: int, mesh) -> tuple[np.ndarray, float]:
  """feature_fn over (N, H, W, C) images in batches split over the mesh -> ((N, F), img/s)."""
  from cmjax import parallel

  n_dev = mesh.devices.size
  batch = min(batch, len(images))
  batch = -(-batch // n_dev) * n_dev  # a multiple of the device count
  sh = parallel.batch_sharding(mesh)
  out, t0 = [], time.perf_counter()
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    pad = batch - len(chunk)  # one compiled shape: pad the last batch, drop the padding after
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    out.append(np.asarray(feature_fn(jax.device_put(chunk, sh)))[:batch - pad])
  return np.concatenate(out), len(images) / max(time.perf_counter() - t0, 1e-9)


class StreamingStatistics:
  """Mean and unbiased covariance of features arriving in chunks (float64 sums), equal to
  `frechet.feature_statistics` of their concatenation; keeps the first `keep` features."""

  def __init__(self, keep: int = MAX_REFERENCE_FEATURES):
    self.n, self.s1, self.s2, self.kept, self.keep = 0, None, None, [], keep

  def add(self, feats: np.ndarray) -> None:
    f = np.asarray(feats, np.float64)
    if self.s1 is None:
      self.s1, self.s2 = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
    self.n += len(f)
    self.s1 += f.sum(0)
    self.s2 += f.T @ f
    room = self.keep - sum(len(k) for k in self.kept)
    if room > 0:
      self.kept.append(np.asarray(feats[:room], np.float32))

  def result(self) -> dict:
    if self.n < 2:
      raise ValueError(f"need at least 2 reference images, got {self.n}")
    mu = self.s1 / self.n
    sigma = (self.s2 - self.n * np.outer(mu, mu)) / (self.n - 1)
    return {"mu": mu, "sigma": sigma, "features": np.concatenate(self.kept)}


def fid_reference(path: str, feature_fn, chunks_fn, batch: int, mesh) -> dict:
  """The reference statistics at `path` (.npz with mu (F,), sigma (F, F), features (<= 50k, F)),
  computed from chunks_fn() -> iterable of (n, H, W, 3) images in [-1, 1] (streamed: a data set
  need not fit in memory) and cached there if missing."""
  if os.path.isfile(path):
    with np.load(path) as z:
      missing = [k for k in ("mu", "sigma", "features") if k not in z]
      if missing:
        raise ConfigError(f"eval.fid_reference {path} lacks {missing}; delete it to recompute")
      return {k: z[k] for k in ("mu", "sigma", "features")}
  stats = StreamingStatistics()
  for chunk in chunks_fn():
    stats.add(sharded_features(feature_fn, chunk, batch, mesh)[0])
  ref = stats.result()
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **ref)
    os.replace(tmp, path)
  return ref


REFERENCE_CHUNK = 10_000  # training images read, converted and featurised at a time


def training_image_chunks(config, chunk: int = REFERENCE_CHUNK):
  """Every training image of config.data once, as (<= chunk, H, W, 3) float32 in [-1, 1] (grey
  repeated), in a fixed seeded order (so the features kept for precision/recall are a uniform
  subset), read through the run's data source (TFDS, folder or digits; no flips)."""
  from cmjax.data import build_source

  if config.data.name.startswith("toy2d_"):
    raise ConfigError(f"FID needs image data, not {config.data.name}")
  cfg = config.copy_and_resolve_references()
  with cfg.unlocked():
    cfg.data.random_flip = False
    cfg.train.batch_size = 1
  source = build_source(cfg, 0, 1, with_labels=False)
  order = np.random.default_rng(20240601).permutation(source.num_records)
  for start in range(0, len(order), chunk):
    images, _ = source.read_records(np.sort(order[start:start + chunk]))
    x = np.asarray(images, np.float32)
    if images.dtype == np.uint8:
      x = x / 127.5 - 1.0
    yield np.repeat(x, 3, -1) if x.shape[-1] == 1 else x


def evaluate(config, workdir: str) -> list:
  """`--mode eval`; appends one record per sampler to WORKDIR/eval.json and returns them."""
  from cmjax.evaluation.precision_recall import precision_recall
  from cmjax.inference import restore_params
  from cmjax.trainer import Run

  check_eval_config(config)
  e = config.eval
  workdir = os.path.abspath(workdir)
  run = Run(config)
  step, params = restore_params(run, workdir, int(e.checkpoint), e.params)
  data = config.data.name
  feature_fn = ref = None
  if e.fid_weights:
    from cmjax.evaluation.inception import load_inception_params, make_feature_fn
    try:
      feature_fn = make_feature_fn(load_inception_params(e.fid_weights))
    except ValueError as err:
      raise ConfigError(f"eval.fid_weights: {err}") from err
    ref = fid_reference(e.fid_reference, feature_fn, lambda: training_image_chunks(config),
                        int(e.batch_size), run.mesh)
  train_feats = None
  if not data.startswith("toy2d_"):  # the digits classifier's features of the train split, once
    from cmjax.data.digits import load_digits_split
    from cmjax.evaluation import digits_features
    train_feats = digits_features(load_digits_split("train"))
  records = []
  for name, spec in run.named_samplers:
    rec = {"step": step, "params": e.params, "sampler": name, "spec": list(spec)}
    num = int(e.num_samples)
    t0 = time.perf_counter()
    imgs = run.generate(params, num, spec)
    rec["sampling_img_per_s"] = num / (time.perf_counter() - t0)
    rec["num_samples"] = num
    if data.startswith("toy2d_"):
      from cmjax.evaluation.toy2d_metrics import toy2d_metrics
      rec.update(toy2d_metrics(imgs, data[len("toy2d_"):]))
    else:
      from cmjax.evaluation import digits_features, digits_fd
      rec["fd_digits"] = float(digits_fd(imgs))
      pr = precision_recall(train_feats, digits_features(imgs), k=int(e.pr_k))
      rec.update({f"digits_{k}": v for k, v in pr.items()})
    if feature_fn is not None:
      from cmjax.evaluation.frechet import feature_statistics, frechet_distance
      n_fid = int(e.fid_num_samples)
      fid_imgs = imgs if n_fid <= len(imgs) else run.generate(params, n_fid, spec)
      fid_imgs = np.clip(fid_imgs[:n_fid], -1.0, 1.0)
      if fid_imgs.shape[-1] == 1:
        fid_imgs = np.repeat(fid_imgs, 3, -1)
      feats, ips = sharded_features(feature_fn, fid_imgs, int(e.batch_size), run.mesh)
      rec["fid"] = float(frechet_distance(*feature_statistics(feats), ref["mu"], ref["sigma"]))
      pr = precision_recall(ref["features"], feats, k=int(e.pr_k))
      rec.update({"fid_num_samples": n_fid, "inception_img_per_s": ips,
                  "precision": pr["precision"], "recall": pr["recall"]})
    records.append(rec)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float))
    print(f"cmjax: eval {name} (checkpoint {step}, {e.params}): {shown}")
  if jax.process_index() == 0:
    path = os.path.join(workdir, "eval.json")
    old = json.load(open(path)) if os.path.isfile(path) else []
    write_json_atomic(path, old + records)
  return records
