"""EDM's augmentation pipeline (cmjax/data/augment.py): parity with EDM's own AugmentPipe given the
same random draws, hand-computed flips and translations, p = 0, per-example determinism (also
split over 8 devices), the firing rates of the sampled draws, and one-line errors.

Frozen references (tests/assets/edm_augment_single.npz, 147 KB; edm_augment_combo.npz, 139 KB)
come from NVlabs/edm commit 008a4e5 (training/augment.py, class AugmentPipe) with torch 2.13 on
CPU, made by the generator script kept outside the repo at /work/scratch/augment_gen/gen.py:
  cd <edm checkout at 008a4e5> && python gen.py <outdir>
It calls AugmentPipe(p, **options)(x) with torch.rand / randn / randint replaced by functions that
serve numpy draws in EDM's drawing order (kind and shape of every request asserted, queue empty
afterwards), and stores the draws (named as cmjax.data.augment.DRAWS), the input images (uint8,
x = u8 / 127.5 - 1, NHWC), EDM's outputs (NCHW -> NHWC float32; pixel-blitting outputs, exact
copies of input pixels, as uint8) and the labels:
  single: 2 images 32x32x3, each transform alone at p = 1 (xflip, yflip, rotate_int,
          translate_int, scale, rotate_frac, aniso, translate_frac) and 'extreme' (scale by
          2^-2 and 2^-1.6: EDM's margin clamps at W - 1 and zeros come in);
  combo:  4 images 32x32x3: EDM's CIFAR-10 setting at p = 0.5 ('cifar10'), MeanFlow's at
          p = 0.5 ('meanflow'), EDM's CIFAR-10 at p = 0 on 2 images ('p0'), and 2 non-square
          16x24 images with EDM's CIFAR-10 setting at p = 1 ('rect').
EDM's outputs are from a batched call (margin over the batch); cmjax pads per example.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.data import augment as A
from cmjax.errors import ConfigError
from cmjax.train_step import example_keys

ASSETS = __file__.rsplit("/", 1)[0] + "/assets/"
SINGLE = ("xflip", "yflip", "rotate_int", "translate_int", "scale", "rotate_frac", "aniso",
          "translate_frac", "extreme")
COMBO = {"cifar10": (A.EDM_CIFAR10, 0.5), "meanflow": (A.MEANFLOW_CIFAR10, 0.5),
         "p0": (A.EDM_CIFAR10, 0.0), "rect": (A.EDM_CIFAR10, 1.0)}


def _float(u8):
  return u8.astype(np.float32) / np.float32(127.5) - 1


def _draws(z, case):
  prefix = f"{case}/draw/"
  return {k[len(prefix):]: v for k, v in z.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def single():
  return dict(np.load(ASSETS + "edm_augment_single.npz"))


@pytest.fixture(scope="module")
def combo():
  return dict(np.load(ASSETS + "edm_augment_combo.npz"))


@pytest.mark.parametrize("case", SINGLE)
def test_each_transform_matches_edm(single, case):
  z = single
  options = {"scale": 1} if case == "extreme" else {case: 1}
  out, labels = A.augment_from_draws(_float(z["images"]), _draws(z, case), 1.0, **options)
  ref = _float(z[f"{case}/out_u8"]) if f"{case}/out_u8" in z else z[f"{case}/out"]
  assert out.shape == ref.shape and labels.shape == z[f"{case}/labels"].shape
  np.testing.assert_allclose(labels, z[f"{case}/labels"], atol=1e-6)
  if f"{case}/out_u8" in z:  # pixel blitting: exact copies
    np.testing.assert_array_equal(out, ref)
  else:
    np.testing.assert_allclose(out, ref, atol=1e-4)
  assert np.abs(out - _float(z["images"])).max() > 0.5  # the transform did something


@pytest.mark.parametrize("case", sorted(COMBO))
def test_settings_match_edm(combo, case):
  z = combo
  options, p = COMBO[case]
  out_ref = z[f"{case}/out"]
  images = _float(z["rect/images"] if case == "rect" else z["images"])[:out_ref.shape[0]]
  out, labels = A.augment_from_draws(images, _draws(z, case), p, **options)
  np.testing.assert_allclose(labels, z[f"{case}/labels"], atol=1e-6)
  np.testing.assert_allclose(out, out_ref, atol=1e-4)
  if case == "p0":
    np.testing.assert_allclose(out, images, atol=1e-5)
    assert not np.any(labels)


def test_label_layout():
  assert A.augment_dim(**A.EDM_CIFAR10) == 9 and A.augment_dim(**A.MEANFLOW_CIFAR10) == 6
  assert A.label_names(**A.EDM_CIFAR10) == (
      "xflip", "yflip", "scale", "rotate_frac_cos", "rotate_frac_sin", "aniso_x", "aniso_y",
      "translate_frac_x", "translate_frac_y")
  assert A.augment_dim() == 0  # EDM's constructor defaults: everything off
  assert A.augment_dim(rotate_int=1, translate_int=1) == 4


def test_p0_returns_images_and_zero_labels():
  x = jax.random.normal(jax.random.key(0), (3, 16, 16, 3))
  keys = jax.random.split(jax.random.key(1), 3)
  out, labels = A.edm_augment(keys, x, 0.0, **A.EDM_CIFAR10)
  np.testing.assert_allclose(out, x, atol=5e-5)  # EDM still runs the (identity) filter pair
  np.testing.assert_array_equal(labels, np.zeros((3, 9)))
  out, labels = A.edm_augment(keys, x, 0.0, xflip=1, yflip=1, rotate_int=1, translate_int=1)
  np.testing.assert_array_equal(out, x)  # pixel blitting alone: exactly unchanged
  np.testing.assert_array_equal(labels, np.zeros((3, 6)))


def test_xflip_by_hand():
  x = np.arange(2 * 4 * 5 * 3, dtype=np.float32).reshape(2, 4, 5, 3)
  draws = {"xflip_bit": np.array([1, 0]), "xflip_u": np.array([0.99, 0.3], np.float32)}
  out, labels = A.augment_from_draws(x, draws, 1.0, xflip=1)
  np.testing.assert_array_equal(out[0], x[0][:, ::-1])  # width axis mirrored
  np.testing.assert_array_equal(out[1], x[1])
  np.testing.assert_array_equal(labels, [[1.0], [0.0]])
  # EDM's CIFAR-10 multiplier 1e8 fires at any p > 0; a gate u >= multiplier * p does not.
  out, labels = A.augment_from_draws(x, draws, 0.5, xflip=1)
  np.testing.assert_array_equal(out[0], x[0])
  np.testing.assert_array_equal(labels, [[0.0], [0.0]])
  out, labels = A.augment_from_draws(x, draws, 0.01, xflip=1e8)
  np.testing.assert_array_equal(labels, [[1.0], [0.0]])


def test_integer_translation_by_hand():
  x = np.random.default_rng(0).standard_normal((1, 6, 6, 2)).astype(np.float32)
  # w = 2v - 1 = (0.7, -0.3); tx = round(0.7 * 6 * 0.5) = 2, ty = round(-0.3 * 3) = -1.
  draws = {"translate_int_v": np.array([[0.85, 0.35]], np.float32),
           "translate_int_u": np.array([0.5], np.float32)}
  out, labels = A.augment_from_draws(x, draws, 1.0, translate_int=1, translate_int_max=0.5)
  # EDM: out[y, x] = in[y + ty, x - tx] -> x moves right by tx, y moves down by -ty = 1.
  expected = x[:, [1, 0, 1, 2, 3, 4]][:, :, [2, 1, 0, 1, 2, 3]]
  np.testing.assert_array_equal(out, expected)
  np.testing.assert_allclose(labels, [[2 / 3, -1 / 3]], rtol=1e-6)


def test_fractional_translation_by_hand():
  """translate_frac is in units of translate_frac_std * image size: z = (0.5, -0.25) on 32x32
  shifts by (2, -1) pixels; an integer shift resamples pixel centres, so the wavelet up/down pair
  gives the reflection-padded shifted image."""
  x = np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)
  draws = {"translate_frac_z": np.array([[0.5, -0.25]], np.float32),
           "translate_frac_u": np.array([0.0], np.float32)}
  out, labels = A.augment_from_draws(x, draws, 1.0, translate_frac=1)
  # G_inv = translate(-tx, -ty): out[y, x] = in[y - ty, x - tx], i.e. moved right 2 and up 1.
  rows = [r + 1 if r + 1 < 32 else 30 for r in range(32)]
  cols = [abs(c - 2) for c in range(32)]
  np.testing.assert_allclose(out, x[:, rows][:, :, cols], atol=1e-4)
  np.testing.assert_array_equal(labels, [[0.5, -0.25]])


def _augment(keys, x, p=A.EDM_CIFAR10_P):
  return A.edm_augment(keys, x, p, **A.EDM_CIFAR10)


def test_per_example_keys_determinism_and_device_split():
  x = jax.random.normal(jax.random.key(2), (8, 8, 8, 3))
  keys = example_keys(jax.random.key(3), jnp.asarray(7), 8)
  aug = jax.jit(_augment)
  out, labels = aug(keys, x, 0.9)
  out2, labels2 = aug(keys, x, 0.9)
  np.testing.assert_array_equal(out, out2)
  np.testing.assert_array_equal(labels, labels2)
  other, other_labels = aug(example_keys(jax.random.key(3), jnp.asarray(8), 8), x, 0.9)
  assert not np.allclose(labels, other_labels) and not np.allclose(out, other)
  # Changing example 0's key changes example 0 only.
  keys0 = keys.at[0].set(jax.random.key(99))
  out0, labels0 = aug(keys0, x, 0.9)
  assert not np.allclose(labels0[0], labels[0])
  np.testing.assert_allclose(out0[1:], out[1:], atol=1e-6)
  np.testing.assert_array_equal(labels0[1:], labels[1:])
  # The same batch split over 8 devices (one example each, keys by global index).
  assert jax.device_count() == 8
  dev_keys = jax.pmap(lambda i: example_keys(jax.random.key(3), jnp.asarray(7), 1, "d"),
                      axis_name="d")(jnp.arange(8))
  dev_out, dev_labels = jax.pmap(lambda k, xi: _augment(k, xi, 0.9))(dev_keys,
                                                                     x.reshape(8, 1, 8, 8, 3))
  np.testing.assert_allclose(np.asarray(dev_out).reshape(out.shape), out, atol=3e-5)
  np.testing.assert_allclose(np.asarray(dev_labels).reshape(labels.shape), labels, atol=1e-6)


def test_firing_rates_of_sampled_draws():
  """With EDM's CIFAR-10 setting each geometric transform fires with probability p, y-flips with
  p / 2, x-flips with 1/2 (multiplier 1e8); angles are uniform, scales log-normal."""
  n, p = 20_000, 0.3
  keys = jax.random.split(jax.random.key(5), n)
  d = A.sample_draws(keys, **A.EDM_CIFAR10)
  assert d["xflip_bit"].dtype == jnp.int32 and set(np.unique(d["rotate_int_k"])) == {0, 1, 2, 3}
  _, labels = jax.jit(lambda dd: A.augment_from_draws(jnp.zeros((n, 2, 2, 1)), dd, p,
                                                      xflip=1e8, yflip=1, scale=1, rotate_frac=1,
                                                      aniso=1, translate_frac=1))(d)
  labels = np.asarray(labels)
  tol = 4 * np.sqrt(0.25 / n)
  assert abs(labels[:, 0].mean() - 0.5) < tol
  assert abs(labels[:, 1].mean() - p / 2) < tol
  for col in (2, 3, 5, 7):  # scale, rotation, aniso, translation fired
    assert abs((labels[:, col] != 0).mean() - p) < tol, col
  fired = labels[:, 2] != 0
  assert abs(labels[fired, 2].std() - 1) < 0.05  # scale label = the N(0, 1) draw
  angle = np.arctan2(labels[:, 4], labels[:, 3] + 1)[labels[:, 3] != 0]
  assert abs(angle.mean()) < 0.1 and abs(np.abs(angle).mean() - np.pi / 2) < 0.1  # U[-pi, pi)


def test_traced_p_under_jit_matches_edm(combo):
  """p may be a traced scalar (e.g. annealed inside a jitted step): same numbers."""
  options, p = COMBO["cifar10"]
  images = _float(combo["images"])
  f = jax.jit(lambda x, d, p: A.augment_from_draws(x, d, p, **options))
  out, labels = f(images, _draws(combo, "cifar10"), jnp.float32(p))
  np.testing.assert_allclose(labels, combo["cifar10/labels"], atol=1e-6)
  np.testing.assert_allclose(out, combo["cifar10/out"], atol=1e-4)


@pytest.mark.parametrize("call, error, match", [
    (lambda k, x: A.edm_augment(k, x, 1.5, xflip=1), ConfigError, "p must be in"),
    (lambda k, x: A.edm_augment(k, x, -0.1, xflip=1), ConfigError, "p must be in"),
    (lambda k, x: A.edm_augment(k, x[0], 0.1, xflip=1), ValueError, r"\(B, H, W, C\)"),
    (lambda k, x: A.edm_augment(k, x[:, :, :5], 0.1, rotate_int=1), ValueError, "square"),
    (lambda k, x: A.edm_augment(k, x, 0.1, brightness=1), ConfigError, "not ported"),
    (lambda k, x: A.edm_augment(k, x, 0.1, xfilp=1), ConfigError, "unknown option"),
    (lambda k, x: A.edm_augment(k, x, 0.1, scale=-1), ConfigError, "scale must be"),
    (lambda k, x: A.edm_augment(k[:1], x, 0.1, xflip=1), ValueError, "1 keys for 2 images"),
    (lambda k, x: A.edm_augment(k[0], x, 0.1, xflip=1), ValueError, "per-example keys"),
    (lambda k, x: A.augment_from_draws(x, {}, 0.1, scale=1), ValueError, "draws lack"),
])
def test_bad_input_is_one_line(call, error, match):
  x = jnp.zeros((2, 6, 6, 3))
  keys = jax.random.split(jax.random.key(0), 2)
  with pytest.raises(error, match=match) as info:
    call(keys, x)
  assert "\n" not in str(info.value)
