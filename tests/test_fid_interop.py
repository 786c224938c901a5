"""FID interop with the published pipelines (EDM, ADM's evaluator, the CM code): the uint8
quantisation before the Inception features, the three reference formats of `--mode eval`, one-line
errors for malformed references, and the ADM sample-batch keys of `--mode sample`'s .npz.

A toy 2048-d feature function (tanh of a fixed random projection, sensitive to every input
value) stands in for the Inception port: these tests check the plumbing around the features,
which is the same for any feature_fn (the Inception port itself is tests/test_inception.py).

Frozen asset tests/assets/fid_interop_quantize.npz (20 KB), written by
/work/scratch/fid_interop/gen_fid_interop.py (torch 2.13 CPU, scipy), run as
`/work/main/.venv/bin/python write_sample_check.py && torchenv/bin/python gen_fid_interop.py`:
  x          (3263,) float32: 3000 uniform in [-1.05, 1.05] (seed 123), the 255 ties
             (k + 0.5) / 127.5 - 1, and edge values (+-1, +-1.5, 0, ...);
  edm_uint8  EDM's generate.py conversion `(x * 127.5 + 128).clip(0, 255).to(torch.uint8)`
             (NVlabs/edm @ 008a4e5316c8e3bfe61a62f874bddba254295afb, generate.py line 297);
  adm_uint8  ADM's / the CM code's `((x + 1) * 127.5).clamp(0, 255).to(th.uint8)`
             (openai/guided-diffusion @ 22e0df8183507e13a7813f8d38d51b072ca1e67c and
             openai/consistency_models @ e32b69ee436d518377db86fb2127a3972d0d8716,
             scripts/image_sample.py);
  edm_fid    EDM fid.py's calculate_fid_from_inception_stats (scipy sqrtm; the function run
             unchanged, extracted from fid.py) on the seeded 64-d statistics `_stats(1)`,
             `_stats(2)` below.
The same script checked that ADM's evaluator.py `open_npz_array` (the function run unchanged,
tensorflow not needed for it) streams arr_0 and arr_1 out of an .npz written from
`sample_npz_arrays` (StreamingNpzArrayReader, uint8 (5, 8, 8, 3), labels equal).
"""
from __future__ import annotations

import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.errors import ConfigError
from cmjax.evaluation.frechet import feature_statistics, frechet_distance
from cmjax.images import to_uint8
from cmjax.modes.evaluate import (fid_metrics, fid_reference, quantize_images, read_fid_reference,
                                  reference_batch_chunks, sharded_features)
from cmjax.modes.sample import sample_npz_arrays
from cmjax.parallel import make_data_mesh

ASSET = os.path.join(os.path.dirname(__file__), "assets", "fid_interop_quantize.npz")
F = 64  # the toy features' dimension (fast Fréchet distances); real references must be 2048-d


@pytest.fixture(scope="module")
def toy():
  """(feature_fn for (B, 8, 8, 3) images in [-1, 1] -> (B, F), mesh)."""
  w = jnp.asarray(np.random.default_rng(7).normal(0, 0.2, (8 * 8 * 3, F)), jnp.float32)
  fn = jax.jit(lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w))
  return fn, make_data_mesh()


def _never_called():
  raise AssertionError("an existing reference must not be recomputed from training images")


def _stats(seed, f=64, n=200):
  r = np.random.default_rng(seed)
  feats = r.standard_normal((n, f)) @ r.standard_normal((f, f)) * 0.3 + r.standard_normal(f)
  return feats.mean(0), np.cov(feats, rowvar=False)


def _ref_stats(seed=0):
  """A valid F-d (mu, sigma) pair, float64 as EDM's fid.py writes it."""
  r = np.random.default_rng(seed)
  a = r.normal(0, 0.05, (F, 8))
  return r.normal(0, 0.1, F), a @ a.T + np.diag(r.uniform(0.01, 0.02, F))


# ------------------------------------------------------------------------- quantisation


def test_quantisation_matches_edm_generate():
  """Our uint8 pixels equal EDM's generate.py conversion (torch), except at exact ties of
  (x + 1) * 127.5, where numpy rounds half to even and EDM rounds up; ADM/CM truncate."""
  z = np.load(ASSET)
  x, edm, adm = z["x"], z["edm_uint8"], z["adm_uint8"]
  ours = quantize_images(x.reshape(1, -1, 1, 1))[0, :, 0]
  assert ours.shape == (len(x), 3) and ours.dtype == np.uint8
  np.testing.assert_array_equal(ours[:, 0], ours[:, 2])  # grey repeated to RGB
  ours = ours[:, 0]
  frac = ((x.astype(np.float64) + 1) * 127.5) % 1.0
  tie = np.abs(frac - 0.5) < 1e-4
  np.testing.assert_array_equal(ours[~tie], edm[~tie])
  np.testing.assert_array_equal(ours[:3000], edm[:3000])  # every random value agrees with EDM
  assert tie[3000:3255].mean() > 0.9  # the constructed ties are ties
  assert np.abs(ours[tie].astype(int) - edm[tie]).max() <= 1
  diff = ours.astype(int) - adm  # ADM / CM truncate: one step darker on about half the pixels
  assert set(np.unique(diff)) == {0, 1} and 0.4 < diff[:3000].mean() < 0.6


def test_samples_within_half_a_step_give_the_same_features(toy):
  fn, mesh = toy
  rng = np.random.default_rng(0)
  u = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
  base = u.astype(np.float32) / 127.5 - 1.0
  a = base + rng.uniform(-0.45, 0.45, base.shape).astype(np.float32) / 127.5
  b = base + rng.uniform(-0.45, 0.45, base.shape).astype(np.float32) / 127.5
  fa, ips = sharded_features(fn, a, 16, mesh)  # 20 images in batches of 16: the last one padded
  fb, _ = sharded_features(fn, b, 16, mesh)
  assert fa.shape == (20, F) and ips > 0
  np.testing.assert_array_equal(fa, fb)
  assert np.abs(np.asarray(fn(a)) - np.asarray(fn(b))).max() > 1e-4  # unquantised, they differ
  np.testing.assert_allclose(fa, np.asarray(fn(base)), rtol=0, atol=1e-5)
  np.testing.assert_array_equal(sharded_features(fn, u, 16, mesh)[0], fa)  # uint8 input
  shifted = base.copy()
  shifted[3, 0, 0, 0] += 0.6 / 127.5  # more than half a step: another pixel value
  fs = sharded_features(fn, shifted, 16, mesh)[0]
  assert np.abs(fs[3] - fa[3]).max() > 1e-4
  np.testing.assert_array_equal(np.delete(fs, 3, 0), np.delete(fa, 3, 0))
  # out of range is clipped, grey is repeated
  np.testing.assert_allclose(sharded_features(fn, np.full((2, 8, 8, 1), 1.7, np.float32), 8,
                                              mesh)[0],
                             np.asarray(fn(np.ones((2, 8, 8, 3), np.float32))), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------- references


def test_frechet_distance_matches_edm_fid_py():
  mu1, s1 = _stats(1)
  mu2, s2 = _stats(2)
  edm = float(np.load(ASSET)["edm_fid"])
  assert abs(edm - 343.2497516526208) < 1e-9  # the frozen value itself
  np.testing.assert_allclose(frechet_distance(mu1, s1, mu2, s2), edm, rtol=1e-9)


def test_edm_reference_mu_sigma_only(tmp_path, toy):
  """EDM's fid-refs layout (`np.savez(dest, mu=mu, sigma=sigma)`): FID works, P/R is skipped."""
  fn, mesh = toy
  mu, sigma = _ref_stats()
  path = str(tmp_path / "cifar10-32x32.npz")
  np.savez(path, mu=mu, sigma=sigma)
  with pytest.raises(ConfigError, match=r"mu has shape \(64,\), expected \(2048,\)"):
    fid_reference(path, fn, _never_called, 16, mesh)  # Inception's dimension by default
  ref = fid_reference(path, fn, _never_called, 16, mesh, dim=F)
  assert ref["features"] is None
  np.testing.assert_array_equal(ref["mu"], mu)
  np.testing.assert_array_equal(ref["sigma"], sigma)
  imgs = np.random.default_rng(1).uniform(-1, 1, (10, 8, 8, 3)).astype(np.float32)
  out = fid_metrics(fn, imgs, ref, 8, mesh, k=3)
  feats = np.asarray(fn(to_uint8(imgs).astype(np.float32) / 127.5 - 1.0))
  want = frechet_distance(*feature_statistics(feats), mu, sigma)
  np.testing.assert_allclose(out["fid"], want, rtol=1e-6)
  assert out["fid_num_samples"] == 10 and "precision" not in out
  assert "mu/sigma only" in out["pr_note"]


def test_adm_reference_batch(tmp_path, toy):
  """ADM's reference batch: arr_0 uint8 images + mu/sigma over the data set (+ mu_s/sigma_s,
  ignored). Its mu/sigma are used; arr_0's features (streamed) are the P/R reference. Without
  mu/sigma the statistics come from arr_0 (as ADM's evaluator does)."""
  fn, mesh = toy
  rng = np.random.default_rng(2)
  arr = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
  mu, sigma = _ref_stats(3)
  with_stats = str(tmp_path / "VIRTUAL_tiny_labeled.npz")
  np.savez(with_stats, arr_0=arr, mu=mu, sigma=sigma, mu_s=np.zeros(7), sigma_s=np.eye(7))
  with pytest.raises(ConfigError, match="mu has shape"):
    read_fid_reference(with_stats)  # 64-d statistics are not Inception's
  want_feats = np.asarray(fn(arr.astype(np.float32) / 127.5 - 1.0))
  ref = fid_reference(with_stats, fn, _never_called, 8, mesh, dim=F)
  np.testing.assert_array_equal(ref["mu"], mu)
  np.testing.assert_array_equal(ref["sigma"], sigma)
  np.testing.assert_allclose(ref["features"], want_feats, rtol=0, atol=1e-5)
  out = fid_metrics(fn, rng.uniform(-1, 1, (9, 8, 8, 3)).astype(np.float32), ref, 8, mesh, k=3)
  assert 0 <= out["precision"] <= 1 and 0 <= out["recall"] <= 1 and "pr_note" not in out

  images_only = str(tmp_path / "adm_images_only.npz")
  np.savez_compressed(images_only, arr_0=arr)  # a compressed member streams too
  assert read_fid_reference(images_only)["images"] == (12, 8, 8, 3)
  chunks = list(reference_batch_chunks(images_only, max_bytes=5 * 8 * 8 * 3))
  assert [len(c) for c in chunks] == [5, 5, 2]
  np.testing.assert_array_equal(np.concatenate(chunks), arr)
  ref = fid_reference(images_only, fn, _never_called, 8, mesh, dim=F)
  w_mu, w_sigma = feature_statistics(want_feats)
  np.testing.assert_allclose(ref["mu"], w_mu, rtol=0, atol=1e-5)
  np.testing.assert_allclose(ref["sigma"], w_sigma, rtol=0, atol=1e-5)


def test_cmjax_reference_is_computed_cached_and_reread(tmp_path, toy):
  fn, mesh = toy
  real = np.random.default_rng(4).uniform(-1, 1, (6, 8, 8, 3)).astype(np.float32)
  path = str(tmp_path / "ref.npz")
  ref = fid_reference(path, fn, lambda: [real[:4], real[4:]], 8, mesh)
  with np.load(path, allow_pickle=False) as z:
    assert sorted(z.files) == ["features", "mu", "sigma"]
  again = fid_reference(path, fn, _never_called, 8, mesh, dim=F)
  for k in ("mu", "sigma", "features"):
    np.testing.assert_array_equal(again[k], ref[k])
  np.testing.assert_allclose(ref["features"], np.asarray(fn(to_uint8(real) / 127.5 - 1.0)),
                             rtol=0, atol=1e-5)


def _write(path, **arrays):
  np.savez(path, **arrays)


def _truncated(path):
  np.savez(path, mu=np.zeros(2048), sigma=np.zeros((2048, 2048)))
  data = open(path, "rb").read()
  open(path, "wb").write(data[: len(data) // 2])


_MU, _SIGMA = np.zeros(2048), np.zeros((2048, 2048), np.float32)
BAD = {
    "mu_without_sigma": (lambda p: _write(p, mu=_MU), "has mu but not sigma"),
    "mu_dim_1000": (lambda p: _write(p, mu=np.zeros(1000), sigma=np.zeros((1000, 1000))),
                    "mu has shape (1000,), expected (2048,)"),
    "sigma_flat": (lambda p: _write(p, mu=_MU, sigma=np.zeros(2048)),
                   "sigma has shape (2048,), expected (2048, 2048)"),
    "int_mu": (lambda p: _write(p, mu=np.zeros(2048, np.int64), sigma=_SIGMA),
               "mu has dtype int64"),
    "nan_mu": (lambda p: _write(p, mu=np.full(2048, np.nan), sigma=_SIGMA), "mu holds NaN"),
    "features_dim_64": (lambda p: _write(p, mu=_MU, sigma=_SIGMA, features=np.zeros((5, 64))),
                        "features has shape (5, 64), expected (N, 2048)"),
    "features_alone": (lambda p: _write(p, features=np.zeros((5, 2048))), "holds neither mu/sigma"),
    "features_without_stats": (lambda p: _write(p, arr_0=np.zeros((3, 4, 4, 3), np.uint8),
                                                features=np.zeros((5, 2048))),
                               "has features but no mu/sigma"),
    "arr_0_float": (lambda p: _write(p, arr_0=np.zeros((3, 4, 4, 3), np.float32)),
                    "arr_0 is float32 (3, 4, 4, 3), expected uint8"),
    "arr_0_3d": (lambda p: _write(p, arr_0=np.zeros((3, 4, 4), np.uint8)),
                 "arr_0 is uint8 (3, 4, 4)"),
    "pickled_mu": (lambda p: _write(p, mu=np.array([{"x": 1}], dtype=object), sigma=_SIGMA),
                   "mu holds Python objects"),
    "truncated_zip": (_truncated, "not a readable .npz"),
    "not_a_zip": (lambda p: open(p, "w").write("mu,sigma\n1,2\n"), "not a readable .npz"),
    "plain_npy": (lambda p: np.save(open(p, "wb"), _MU), "a single .npy array"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_malformed_reference_is_one_config_error(tmp_path, case):
  make, needle = BAD[case]
  path = str(tmp_path / f"{case}.npz")
  make(path)
  with pytest.raises(ConfigError) as err:
    read_fid_reference(path)
  msg = str(err.value)
  assert "\n" not in msg and path in msg and needle in msg, msg


def test_eval_config_check_reads_the_reference_before_compiling(tmp_path):
  from configs import digits_ect

  bad, weights = str(tmp_path / "ref.npz"), str(tmp_path / "inception.npz")
  np.savez(bad, mu=np.zeros(3), sigma=np.zeros((3, 3)))
  np.savez(weights, w=np.zeros(1))  # a readable .npz: its arrays are checked when loaded
  c = digits_ect.get_config("smoke")
  c.eval.fid_weights, c.eval.fid_reference = weights, bad
  from cmjax.modes.evaluate import check_eval_config
  with pytest.raises(ConfigError, match="mu has shape"):
    check_eval_config(c)


# ------------------------------------------------------------------------- sample .npz


def _read_adm_style(path, name):
  """An .npz member read the way ADM's evaluator streams it: the .npy header from the zip member,
  then raw C-order bytes (no pickle, no np.load)."""
  with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
    assert np.lib.format.read_magic(f) == (1, 0)
    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    assert not fortran and not dtype.hasobject
    return np.frombuffer(f.read(), dtype).reshape(shape)


def test_sample_npz_is_an_adm_sample_batch(tmp_path):
  rng = np.random.default_rng(5)
  grey = rng.uniform(-1.2, 1.2, (6, 8, 8, 1)).astype(np.float32)
  labels = np.array([0, 9, 3, 3, 1, 7], np.int32)
  path = str(tmp_path / "sample_a.npz")
  np.savez(path, **sample_npz_arrays(grey, labels, "images", True), step=4, seed=3, params="ema",
           spec='["cm", [80.0, 0.821]]')  # as --mode sample writes it
  with np.load(path, allow_pickle=False) as z:
    assert sorted(z.files) == ["arr_0", "arr_1", "images", "labels", "params", "seed", "spec",
                               "step"]
    got = {k: z[k] for k in z.files}  # every key reads without pickle
  want = np.round((np.clip(grey, -1, 1) + 1) * 127.5).astype(np.uint8)
  assert got["images"].shape == (6, 8, 8, 1) and got["images"].dtype == np.uint8
  np.testing.assert_array_equal(got["images"], want)
  assert got["arr_0"].shape == (6, 8, 8, 3) and got["arr_0"].dtype == np.uint8
  np.testing.assert_array_equal(got["arr_0"], np.repeat(want, 3, -1))
  assert got["arr_1"].dtype == np.int64
  np.testing.assert_array_equal(got["arr_1"], labels)
  np.testing.assert_array_equal(_read_adm_style(path, "arr_0"), got["arr_0"])
  np.testing.assert_array_equal(_read_adm_style(path, "arr_1"), labels)
  # our sample file is also a valid FID reference (ADM batch without statistics)
  assert read_fid_reference(path)["images"] == (6, 8, 8, 3)

  rgb = rng.uniform(-1, 1, (4, 8, 8, 3)).astype(np.float32)
  uncond = sample_npz_arrays(rgb, np.zeros((0,), np.int32), "images", False)
  assert sorted(uncond) == ["arr_0", "images", "labels"]
  np.testing.assert_array_equal(uncond["arr_0"], to_uint8(rgb))
  points = sample_npz_arrays(rng.normal(size=(5, 2)), np.zeros((0,), np.int32), "points", False)
  assert sorted(points) == ["images", "labels"] and points["images"].dtype == np.float32
