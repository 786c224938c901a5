"""`--mode eval`: metrics of a trained run's samplers, appended to WORKDIR/eval.json.

For every sampler of the run (1 and 2 steps, or the ODE of a diffusion model):
  digits      digits-FD (eval.num_samples) and improved precision/recall (k = eval.pr_k) on the
              digits classifier's features against the train split;
  2-D data    sliced Wasserstein, modes covered (and, on the 8 Gaussians, the consistency error);
  FID         when eval.fid_weights names converted Inception weights
              (scripts/convert_inception_weights.py): FID of eval.fid_num_samples samples (50,000
              as in the papers) against eval.fid_reference, plus precision/recall on the same
              features when the reference has features or images.

FID inputs are quantised to uint8 first, as in the published pipelines (EDM's generate.py writes
PNGs that fid.py reads as uint8; ADM's and the CM code's image_sample.py write uint8 .npz batches
for ADM's evaluator): a sample x in [-1, 1] becomes u = round((x + 1) * 127.5) clipped to
[0, 255] (`cmjax.images.to_uint8`, the pixels `--mode sample` writes), and the Inception port sees
u / 127.5 - 1. Samples that differ by less than half a uint8 step thus give the same features, and
FID of the written .npz equals FID of the samples. Rounding is EDM's (x * 127.5 + 128, truncated,
equal to round((x + 1) * 127.5) except at exact ties, where numpy rounds half to even); ADM and the
CM code truncate ((x + 1) * 127.5, floor), i.e. pixels up to one step darker than ours.

eval.fid_reference, an .npz read without pickle (np.load(allow_pickle=False)), may hold:
  mu (2048,), sigma (2048, 2048)             EDM's fid-refs/*.npz (`fid.py ref`): FID only, the
                                             record's `pr_note` says precision/recall was skipped;
  mu, sigma, features (N <= 50,000, 2048)    what cmjax computes from the run's training images
                                             (digits, TFDS cifar10 / imagenet64, or a folder;
                                             streamed through the data source) the first time
                                             and caches at that path when the file is missing;
  arr_0 uint8 (N, H, W, 3) [+ mu, sigma]     an ADM reference batch (guided-diffusion
                                             evaluations/, e.g. VIRTUAL_imagenet64_labeled.npz:
                                             arr_0 10,000 images, mu/sigma over the whole data
                                             set, mu_s/sigma_s spatial ones, ignored). As ADM's
                                             evaluator: its mu/sigma are used when present, else
                                             computed from arr_0; arr_0's features are the
                                             precision/recall reference. They are computed by
                                             our Inception port at every eval (streamed from
                                             the file, not cached: 10,000 images cost a fifth of
                                             one sampler's 50,000, and a cache would go stale
                                             with other Inception weights).
Other keys are ignored. A malformed file (missing keys, wrong shapes or dtypes, statistics of
another dimension than 2048, non-finite values, pickled objects, not an .npz) is one ConfigError
naming the file and the problem, raised before anything is compiled. Note: the Inception port is
pytorch-fid's network; EDM's and ADM's statistics come from their own ports of the same 2015 TF
graph (uint8 input, (x - 128) / 128, their own resizing), so FIDs against them carry that small
pipeline difference.
Sampling and feature extraction run jitted over the device mesh (batches split over devices);
each record reports their img/s.
"""
from __future__ import annotations

import zipfile
import os
import time
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import parallel
from cmjax.data import build_source, data_kind
from cmjax.errors import ConfigError
from cmjax.evaluation.evaluators import evaluator_for
from cmjax.evaluation.frechet import feature_statistics, frechet_distance
from cmjax.evaluation.inception import FEATURE_DIM, load_inception_params, make_feature_fn
from cmjax.evaluation.precision_recall import precision_recall
from cmjax.images import to_uint8
from cmjax.modes.common import inference_setup
from cmjax.param_files import read_npz
from cmjax.run_logging import read_json_of_type, write_json_atomic

MAX_REFERENCE_FEATURES = 50_000  # kept in the reference .npz for precision/recall
ADM_CHUNK_BYTES = 256 * 2**20  # arr_0 images read from an ADM reference batch at a time (at most)


def check_eval_config(config) -> None:
  """One-line ConfigErrors for the eval-mode fields (and an existing eval.fid_reference file),
  before anything is compiled."""
  e = config.eval
  if e.fid_weights and not os.path.isfile(e.fid_weights):
    raise ConfigError(f"eval.fid_weights: no file {e.fid_weights!r} (convert the Inception weights "
                      f"with scripts/convert_inception_weights.py)")
  if e.fid_weights and not e.fid_reference:
    raise ConfigError("eval.fid_reference must name the reference statistics .npz (it is computed "
                      "and cached there when missing)")
  if e.fid_weights and config.data.name == "latent" and not os.path.isfile(e.fid_reference):
    raise ConfigError(f"eval.fid_reference {e.fid_reference!r} does not exist; a latent run's "
                      f"reference comes from the 256 px images (ADM's VIRTUAL_imagenet256_labeled"
                      f".npz, docs/latent.md): the latents cannot stand in for them")
  if e.fid_num_samples < 2 or e.pr_k < 1:
    raise ConfigError(f"eval.fid_num_samples must be >= 2 and eval.pr_k >= 1 (got "
                      f"{e.fid_num_samples}, {e.pr_k})")
  if e.fid_weights:  # a truncated or corrupt .npz: one line now, not after restoring
    read_npz(e.fid_weights, "eval.fid_weights")
  if e.fid_weights and os.path.isfile(e.fid_reference):
    read_fid_reference(e.fid_reference)


def quantize_images(images: np.ndarray) -> np.ndarray:
  """FID's input quantisation: (N, H, W, C) float in [-1, 1] -> uint8 (N, H, W, 3) with
  u = round((x + 1) * 127.5) clipped to [0, 255] (`cmjax.images.to_uint8`, as EDM's generate.py);
  uint8 images pass through. One channel (grey) is repeated to RGB."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"FID expects (N, H, W, 1 or 3) images, got shape {images.shape}")
  u8 = images if images.dtype == np.uint8 else to_uint8(images)
  return np.repeat(u8, 3, -1) if u8.shape[-1] == 1 else u8


@jax.jit
def _uint8_to_unit(u8: jax.Array) -> jax.Array:
  """uint8 (B, H, W, 3) -> float32 u / 127.5 - 1 in [-1, 1] (the Inception port's input range)."""
  return u8.astype(jnp.float32) / 127.5 - 1.0


def sharded_features(feature_fn, images: np.ndarray, batch: int, mesh) -> tuple[np.ndarray, float]:
  """feature_fn over (N, H, W, C) images in batches split over the mesh -> ((N, F), img/s).

  images: float in [-1, 1] or uint8, C = 1 (repeated) or 3. Each batch is quantised to uint8
  (`quantize_images`), sent to the devices as uint8 and mapped to u / 127.5 - 1 there, so
  feature_fn (e.g. `inception.make_feature_fn`) sees exactly what the published FID pipelines
  see: the pixels of the uint8 images they store.
  """
  n_dev = mesh.devices.size
  batch = min(batch, len(images))
  batch = -(-batch // n_dev) * n_dev  # a multiple of the device count
  sh = parallel.batch_sharding(mesh)
  out, t0 = [], time.perf_counter()
  for start in range(0, len(images), batch):
    chunk = quantize_images(images[start:start + batch])
    pad = batch - len(chunk)  # one compiled shape: pad the last batch, drop the padding after
    if pad:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
    x = _uint8_to_unit(jax.device_put(chunk, sh))
    out.append(np.asarray(feature_fn(x))[:batch - pad])
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


def _npy_header(f, name: str, path: str) -> tuple[tuple, bool, np.dtype]:
  """(shape, fortran_order, dtype) from the header of member `name`.npy, open as f (left at the
  first byte of the data)."""
  try:
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
      raise ValueError(f"unsupported .npy format version {version}")
    return read(f)
  except ValueError as err:
    raise ConfigError(f"eval.fid_reference {path}: {name} has no readable .npy header "
                      f"({str(err).splitlines()[0]})") from err


def _checked_float(z, key: str, shape: tuple, path: str) -> np.ndarray:
  """z[key] (float64; features float32) after checking its dtype (real floating point), shape
  (None: any length) and finiteness."""
  try:
    a = z[key]
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
    if "allow_pickle" in str(err):  # an object array: it would need pickle, which is never used
      raise ConfigError(f"eval.fid_reference {path}: {key} holds Python objects (pickled data "
                        f"is never read)") from err
    raise ConfigError(f"eval.fid_reference {path}: {key} cannot be read "
                      f"({(str(err).splitlines() or [type(err).__name__])[0]})") from err
  if not np.issubdtype(a.dtype, np.floating):
    raise ConfigError(f"eval.fid_reference {path}: {key} has dtype {a.dtype}, expected "
                      f"floating point")
  if len(a.shape) != len(shape) or any(d not in (None, got) for d, got in zip(shape, a.shape)):
    want = ", ".join("N" if d is None else str(d) for d in shape)
    want = f"({want},)" if len(shape) == 1 else f"({want})"
    raise ConfigError(f"eval.fid_reference {path}: {key} has shape {a.shape}, expected {want}")
  if not np.isfinite(a).all():
    raise ConfigError(f"eval.fid_reference {path}: {key} holds NaN or inf")
  return a.astype(np.float64) if key != "features" else a.astype(np.float32)


def read_fid_reference(path: str, dim: int = FEATURE_DIM) -> dict:
  """Reads and checks the reference .npz at `path` (formats: module docstring), without reading
  arr_0's pixels. dim: the feature dimension (2048, Inception pool3).

  Returns {'mu': (dim,) float64 or None, 'sigma': (dim, dim) float64 or None, 'features':
  (N, dim) float32 or None, 'images': the (N, H, W, C) shape of arr_0 uint8 images or None}.
  Raises ConfigError (one line naming the file and the problem) for a malformed file.
  """
  try:
    z = np.load(path, allow_pickle=False)
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
    raise ConfigError(f"eval.fid_reference {path}: not a readable .npz "
                      f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from err
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise ConfigError(f"eval.fid_reference {path}: a single .npy array, expected an .npz with "
                      f"mu/sigma or arr_0 images")
  with z:
    keys = set(z.files)
    if ("mu" in keys) != ("sigma" in keys):
      raise ConfigError(f"eval.fid_reference {path}: has {'mu' if 'mu' in keys else 'sigma'} but "
                        f"not {'sigma' if 'mu' in keys else 'mu'}")
    if "mu" not in keys and "arr_0" not in keys:
      raise ConfigError(f"eval.fid_reference {path}: holds neither mu/sigma (EDM, cmjax) nor arr_0 "
                        f"images (ADM reference batch); keys {sorted(keys)}")
    ref = {"mu": None, "sigma": None, "features": None, "images": None}
    if "mu" in keys:
      ref["mu"] = _checked_float(z, "mu", (dim,), path)
      ref["sigma"] = _checked_float(z, "sigma", (dim, dim), path)
    if "features" in keys:
      if "mu" not in keys:
        raise ConfigError(f"eval.fid_reference {path}: has features but no mu/sigma")
      ref["features"] = _checked_float(z, "features", (None, dim), path)
      if len(ref["features"]) < 2:
        raise ConfigError(f"eval.fid_reference {path}: features holds {len(ref['features'])} "
                          f"vectors, need at least 2")
    if "arr_0" in keys:
      with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
        shape, _, dtype = _npy_header(f, "arr_0", path)
      if dtype != np.uint8 or len(shape) != 4 or shape[-1] not in (1, 3) or shape[0] < 2:
        raise ConfigError(f"eval.fid_reference {path}: arr_0 is {dtype} {tuple(shape)}, expected "
                          f"uint8 (N >= 2, H, W, 3 or 1) images (an ADM reference batch)")
      ref["images"] = tuple(shape)
  return ref


def reference_batch_chunks(path: str, max_bytes: int = ADM_CHUNK_BYTES):
  """The arr_0 uint8 (N, H, W, C) images of an .npz, streamed as (<= n, H, W, C) chunks of at
  most max_bytes (C order: read straight from the zip member, as ADM's evaluator does; Fortran
  order: loaded whole)."""
  with zipfile.ZipFile(path) as zf, zf.open("arr_0.npy") as f:
    shape, fortran, dtype = _npy_header(f, "arr_0", path)
    per_image = int(np.prod(shape[1:])) * dtype.itemsize
    n_chunk = max(1, max_bytes // max(per_image, 1))
    if fortran:
      with np.load(path, allow_pickle=False) as z:
        images = z["arr_0"]
    for start in range(0, shape[0], n_chunk):
      n = min(n_chunk, shape[0] - start)
      if fortran:
        yield np.ascontiguousarray(images[start:start + n])
        continue
      data = f.read(n * per_image)
      if len(data) != n * per_image:
        raise ConfigError(f"eval.fid_reference {path}: arr_0 is truncated ({shape[0]} images "
                          f"announced)")
      yield np.frombuffer(data, dtype).reshape((n,) + tuple(shape[1:]))


def fid_reference(path: str, feature_fn, chunks_fn, batch: int, mesh,
                  dim: int = FEATURE_DIM) -> dict:
  """The FID reference at `path` -> {'mu' (F,), 'sigma' (F, F), 'features' (<= 50k, F) or None}.

  An existing file is read by `read_fid_reference` (EDM's mu/sigma, cmjax's mu/sigma/features,
  or an ADM reference batch, whose arr_0 images are featurised here through feature_fn (statistics
  from them when it holds no mu/sigma; see the module docstring). A missing file is computed
  from chunks_fn() -> iterable of (n, H, W, 3) images in [-1, 1] or uint8 (streamed: a data set
  need not fit in memory) and cached there with mu, sigma and features. dim: the feature
  dimension F an existing file must have (2048, Inception pool3).
  """
  if os.path.isfile(path):
    ref = read_fid_reference(path, dim)
    if ref["features"] is None and ref["images"] is not None:
      stats = StreamingStatistics()
      for chunk in reference_batch_chunks(path):
        stats.add(sharded_features(feature_fn, chunk, batch, mesh)[0])
      got = stats.result()
      ref["features"] = got["features"]
      if ref["mu"] is None:
        ref["mu"], ref["sigma"] = got["mu"], got["sigma"]
    return {k: ref[k] for k in ("mu", "sigma", "features")}
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


def fid_metrics(feature_fn, images: np.ndarray, ref: dict, batch: int, mesh, k: int = 3) -> dict:
  """FID (Heusel et al. 2017, Eq. 6) of (N, H, W, C) samples in [-1, 1] (quantised to uint8 by
  `sharded_features`) against ref (`fid_reference`), and improved precision/recall (k-NN, k) on
  the same features when ref has features; otherwise `pr_note` says why they are missing."""
  feats, ips = sharded_features(feature_fn, images, batch, mesh)
  out = {"fid": float(frechet_distance(*feature_statistics(feats), ref["mu"], ref["sigma"])),
         "fid_num_samples": int(len(images)), "inception_img_per_s": ips}
  if ref.get("features") is None:
    out["pr_note"] = ("precision/recall skipped: the FID reference holds mu/sigma only (no "
                      "features or arr_0 images)")
  else:
    pr = precision_recall(ref["features"], feats, k=k)
    out.update(precision=pr["precision"], recall=pr["recall"])
  return out


REFERENCE_CHUNK = 10_000  # training images read, converted and featurised at a time


def training_image_chunks(config, chunk: int = REFERENCE_CHUNK):
  """Every training image of config.data once, as (<= chunk, H, W, 3) float32 in [-1, 1] (grey
  repeated), in a fixed seeded order (so the features kept for precision/recall are a uniform
  subset), read through the run's data source (TFDS, folder or digits; no flips)."""
  if data_kind(config) == "latents":  # the pixels were never kept: the reference must be a file
    raise ConfigError(f"eval.fid_reference {config.eval.fid_reference!r} does not exist; a latent "
                      f"run's reference comes from the 256 px images (ADM's "
                      f"VIRTUAL_imagenet256_labeled.npz, docs/latent.md)")
  if data_kind(config) != "images":
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


def read_eval_records(path: str) -> list:
  """The records already in WORKDIR/eval.json ([] when there is none). ConfigError (one line)
  when it is not a JSON list (a hand-edited or foreign file: never overwritten)."""
  if not os.path.exists(path):
    return []
  return read_json_of_type(path, list, f"{path} is not a list of eval records written by cmjax "
                           f"({{}}); move it away and rerun")


def evaluate(config, workdir: str) -> list:
  """`--mode eval`; appends one record per sampler to WORKDIR/eval.json and returns them."""
  check_eval_config(config)
  e = config.eval
  workdir = os.path.abspath(workdir)
  old = read_eval_records(os.path.join(workdir, "eval.json"))  # before anything is compiled
  built, sampler, step, params = inference_setup(config, workdir, int(e.checkpoint), e.params,
                                                 e.weights, "eval.weights")
  feature_fn = ref = None
  if e.fid_weights:
    try:
      feature_fn = make_feature_fn(load_inception_params(e.fid_weights))
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:  # wrong keys, corrupt .npz
      raise ConfigError(f"eval.fid_weights: {e.fid_weights}: cannot be read as Inception weights "
                        f"({type(err).__name__}: {' '.join(str(err).split())[:200]})") from None
    ref = fid_reference(e.fid_reference, feature_fn, lambda: training_image_chunks(config),
                        int(e.batch_size), built.mesh)
  evaluator = evaluator_for(config, precision_recall_k=int(e.pr_k))
  records = []
  for name, spec in built.named_samplers:
    rec = {"step": step, "params": e.params, "sampler": name, "spec": list(spec)}
    num = int(e.num_samples)
    t0 = time.perf_counter()
    imgs = sampler.generate(params, num, spec)
    rec["sampling_img_per_s"] = num / (time.perf_counter() - t0)
    rec["num_samples"] = num
    rec.update(evaluator.metrics(imgs))
    if feature_fn is not None:
      n_fid = int(e.fid_num_samples)
      fid_imgs = imgs if n_fid <= len(imgs) else sampler.generate(params, n_fid, spec)
      rec.update(fid_metrics(feature_fn, fid_imgs[:n_fid], ref, int(e.batch_size), built.mesh,
                             int(e.pr_k)))
      if "pr_note" in rec:
        print(f"cmjax: eval {name}: {rec['pr_note']}")
    records.append(rec)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in rec.items() if isinstance(v, float))
    print(f"cmjax: eval {name} (checkpoint {step}, {e.params}): {shown}")
  if jax.process_index() == 0:
    path = os.path.join(workdir, "eval.json")
    write_json_atomic(path, old + records)
  return records
