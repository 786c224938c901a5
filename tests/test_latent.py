"""Latent data (issue 16): ADM's centre crop, the record format, the latent source's batches,
--mode encode against the VAE, one-line errors for bad input, DiT's remat and null row, and the
tiny end to end run: encode mock images, train one MeanFlow step on a DiT, sample, decode."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _latent_data import mock_images, mock_latents, tiny_vae_file
from cmjax import config_base
from cmjax.data.latent import DataError, LatentSource, pack_record, read_meta, unpack_record
from cmjax.data.raw_images import center_crop_arr
from cmjax.models import model_config


def adm_center_crop_arr(pil_image, image_size):  # guided-diffusion image_datasets.py, verbatim
  from PIL import Image
  while min(*pil_image.size) >= 2 * image_size:
    pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
  scale = image_size / min(*pil_image.size)
  pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
  arr = np.array(pil_image)
  crop_y = (arr.shape[0] - image_size) // 2
  crop_x = (arr.shape[1] - image_size) // 2
  return arr[crop_y: crop_y + image_size, crop_x: crop_x + image_size]


@pytest.mark.parametrize("hw", [(600, 300), (67, 91), (32, 32), (40, 257)])
def test_center_crop_is_adms(hw):
  from PIL import Image
  im = Image.fromarray(np.random.default_rng(1).integers(0, 256, hw + (3,), dtype=np.uint8))
  got = center_crop_arr(im, 32)
  assert got.shape == (32, 32, 3) and got.dtype == np.uint8
  np.testing.assert_array_equal(got, adm_center_crop_arr(im, 32))
  if hw == (32, 32):
    np.testing.assert_array_equal(got, np.asarray(im))  # already the size: untouched


def test_record_roundtrip_and_wrong_size():
  m = np.random.default_rng(0).standard_normal((2, 2, 4, 4, 4)).astype(np.float32)
  label, back = unpack_record(pack_record(7, m), (4, 4, 4))
  assert label == 7 and np.array_equal(back, m)
  with pytest.raises(DataError, match="expected"):
    unpack_record(pack_record(7, m)[:-4], (4, 4, 4))


@pytest.fixture(scope="module")
def latents(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("latents"))
  return path, mock_latents(path, 12, resolution=32, classes=3)


def _source(path, **kw):
  return LatentSource(path, 4, 0, **kw)


def test_source_takes_the_mean_or_the_flipped_entry(latents):
  path, ref = latents
  for flip in (False, True):
    src = _source(path, sample=False, random_flip=flip, with_labels=True)
    for step in (0, 3, 7):  # 3 steps per epoch: later epochs reshuffle
      idx, f = src.record_indices(step), (src.flips(step) if flip else np.zeros(4, bool))
      b = src.batch(step)
      np.testing.assert_allclose(b["image"], ref["moments"][idx, f.astype(int), 0] * 0.18215,
                                 rtol=1e-6)
      np.testing.assert_array_equal(b["label"], ref["labels"][idx])
  assert _source(path, sample=False, random_flip=True).flips(0).any()  # both entries are read


def test_source_samples_the_posterior_as_a_pure_function_of_the_step(latents):
  path, ref = latents
  src = _source(path, sample=True, random_flip=True)
  b = src.batch(5)
  idx, f = src.record_indices(5), src.flips(5).astype(int)
  chosen = ref["moments"][idx, f]
  eps = (b["image"] / 0.18215 - chosen[:, 0]) / chosen[:, 1]
  assert abs(eps.mean()) < 0.15 and 0.85 < eps.std() < 1.15  # N(0, 1) noise, scaled by std
  np.testing.assert_array_equal(src.batch(5)["image"], b["image"])  # reproducible
  with src.iterate(5) as it:
    np.testing.assert_allclose(next(it)["image"], b["image"], rtol=1e-6)
  halves = [LatentSource(path, 4, 0, p, 2, sample=True, random_flip=True).batch(5)["image"]
            for p in (0, 1)]
  np.testing.assert_allclose(np.concatenate(halves), b["image"], rtol=1e-6)  # any process count
  r = idx[0]  # the same record in the next epoch gets new noise
  s2 = next(s for s in range(6, 9) if r in src.record_indices(s))
  k2 = list(src.record_indices(s2)).index(r)
  again = src.batch(s2)["image"][k2] / 0.18215 - ref["moments"][r, src.flips(s2)[k2].astype(int), 0]
  assert not np.allclose(again / ref["moments"][r, src.flips(s2)[k2].astype(int), 1], eps[0])


def _config(tmp, resolution=32, **data):
  c = config_base.get_config()
  c.method = "meanflow"
  c.data.update(name="latent", path=str(tmp / "lat"), resolution=resolution,
                vae_weights=str(tmp / "vae.npz"), random_flip=True, read_threads=2, **data)
  c.encode.update(source="folder", path=str(tmp / "imgs"), batch_size=4, shard_size=4)
  side = resolution // 8
  c.model = model_config("dit", input_size=side, patch_size=2, in_channels=4, hidden_size=32,
                         depth=1, num_heads=2, label_dim=2, time_conditions=2,
                         class_dropout_prob=0.0, null_class=True)
  c.meanflow.update(num_classes=2, cfg_kappa=0.5, class_dropout_prob=0.1)
  c.train.update(batch_size=8, num_steps=1, checkpoint_every=1, log_every=1, compile_cache="")
  c.eval.update(batch_size=8, grid_rows=2, num_samples=8, at_end=False)
  c.sample.num = 8
  return c


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
  """Mock images in 2 class folders encoded with the tiny VAE at 32 px (latents 4x4x4)."""
  from cmjax.modes.encode import encode
  tmp = tmp_path_factory.mktemp("enc")
  tiny_vae_file(str(tmp / "vae.npz"))
  mock_images(str(tmp / "imgs"), per_class=4)
  c = _config(tmp)
  return tmp, c, encode(c, str(tmp / "w"))


def test_encode_stores_the_vae_posterior_of_the_crop_and_its_mirror(encoded):
  from cmjax.data.raw_images import FolderImages
  from cmjax.models.vae import encode as vae_encode
  from cmjax.weights.vae_diffusers import load_vae_npz
  tmp, c, meta = encoded
  assert (meta["num_records"], meta["num_classes"], meta["latent_shape"]) == (8, 2, [4, 4, 4])
  assert meta["shard_sizes"] == [4, 4] and read_meta(c.data.path) == meta
  vae, params = load_vae_npz(c.data.vae_weights)
  folder = FolderImages(c.encode.path)
  crops = np.stack([folder.read(i, 32)[0] for i in range(8)]).astype(np.float32) / 127.5 - 1
  src = LatentSource(c.data.path, 2, 0)
  moments, labels = src.read_records(np.arange(8))
  np.testing.assert_array_equal(labels, [0] * 4 + [1] * 4)  # sorted class folders
  for flip, x in ((0, crops), (1, crops[:, :, ::-1])):
    mean = np.asarray(vae_encode(params, x, vae=vae)) / vae.scaling_factor
    np.testing.assert_allclose(moments[:, flip, 0], mean, atol=2e-5)
    post = vae.apply({"params": params}, jnp.asarray(x), method=type(vae).encode)
    np.testing.assert_allclose(moments[:, flip, 1], np.asarray(post.std), rtol=1e-5)
  assert not np.allclose(moments[:, 0, 0], moments[:, 1, 0])  # the mirror is its own latent


def test_encode_twice_is_a_no_op_and_other_settings_are_refused(encoded):
  from cmjax.errors import ConfigError
  from cmjax.modes.encode import encode
  tmp, c, meta = encoded
  assert encode(c, str(tmp / "w")) == meta
  other = _config(tmp, resolution=64)
  with pytest.raises(ConfigError, match="other settings"):
    encode(other, str(tmp / "w"))


def _write_config_file(tmp, c) -> str:
  path = tmp / "cfg.py"
  path.write_text("import ml_collections, json\n"
                  f"def get_config():\n  return ml_collections.ConfigDict(json.loads({c.to_json()!r}))\n")
  return str(path)


def _cli(capsys, cfg, workdir, *args):
  from cmjax.cli import main
  code = main(["cmjax", "--config", cfg, "--workdir", workdir, *args])
  return code, capsys.readouterr()


@pytest.mark.parametrize("args,message", [
    (["--config.data.vae_weights=/nope/vae.npz"], "data.vae_weights: no such file"),
    (["--config.model.input_size=8"], "model.input_size=8 and model.in_channels=4 do not fit"),
    (["--config.data.resolution=64"], r"holds latents of shape \(4, 4, 4\)"),
    (["--mode=encode", "--config.encode.source=digits"], "encode.source must be 'folder' or 'tfds'"),
    (["--mode=encode", "--config.data.vae_weights=/nope/vae.npz"], "data.vae_weights: no such file"),
    (["--mode=encode", "--config.data.name=digits"], "--mode encode writes a latent data set"),
    (["--mode=encode", "--config.data.path=NEW", "--config.encode.path=EMPTY"],
     "no image files .* encode reads images"),
    (["--config.model.null_class=False"], "DiT needs its row"),
    (["--config.model.class_dropout_prob=0.1"], "would both drop labels"),
])
def test_bad_input_is_one_line_before_compiling(encoded, tmp_path, capsys, args, message):
  tmp, c, _ = encoded
  (tmp_path / "empty").mkdir()
  args = [a.replace("NEW", str(tmp_path / "new")).replace("EMPTY", str(tmp_path / "empty"))
          for a in args]
  code, out = _cli(capsys, _write_config_file(tmp_path, c), str(tmp_path / "w"), *args)
  lines = out.err.strip().splitlines()
  assert code == 2 and len(lines) == 1 and lines[0].startswith("cmjax: error: "), out.err
  import re
  assert re.search(message, lines[0]), lines[0]
  assert "compiled" not in out.out and not (tmp_path / "w" / "checkpoints").exists()


def test_dit_remat_and_null_row():
  from cmjax.models.dit import DiT
  kw = dict(input_size=4, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=2,
            label_dim=3, time_conditions=2, class_dropout_prob=0.0)
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 4))
  t, labels = jnp.array([0.3, 0.9]), jnp.array([0, 3])
  plain, remat = DiT(**kw, null_class=True), DiT(**kw, null_class=True, remat=True)
  params = plain.init(jax.random.key(1), x, t, c_noise_2=t)["params"]
  leaves, tree = jax.tree.flatten(params)  # off adaLN-Zero's zero init, so outputs and grads move
  keys = jax.random.split(jax.random.key(3), len(leaves))
  params = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
  assert params["y_embedder"]["embedding_table"].shape == (4, 32)  # 3 classes + the null row
  without = DiT(**kw).init(jax.random.key(1), x, t, class_labels=labels % 3, c_noise_2=t)
  assert without["params"]["y_embedder"]["embedding_table"].shape == (3, 32)  # no null row

  def loss(model, p, train):
    out = model.apply({"params": p}, x, t, train=train, class_labels=labels, c_noise_2=0.5 * t,
                      rngs={"dropout": jax.random.key(2)})
    return jnp.sum(out ** 2)
  for train in (False, True):  # no label is dropped inside: train and eval agree
    np.testing.assert_allclose(loss(plain, params, train), loss(plain, params, False), rtol=1e-6)
  g0 = jax.grad(lambda p: loss(plain, p, True))(params)
  g1 = jax.grad(lambda p: loss(remat, p, True))(params)
  assert jax.tree.structure(g0) == jax.tree.structure(g1)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert float(sum(jnp.abs(a).sum() for a in jax.tree.leaves(g0))) > 0


@pytest.mark.slow
def test_encode_train_sample_decode_end_to_end(encoded, tmp_path, capsys):
  """Mock images -> latents -> one MeanFlow step of a DiT -> samples decoded by the VAE: the sample
  file holds the decoded pixels of the latents the model generates (checked against the VAE)."""
  from cmjax.images import to_uint8
  from cmjax.latent_vae import load_vae
  from cmjax.modes.common import inference_setup
  from cmjax.models.vae import decode as vae_decode
  from cmjax.sampler import Sampler
  tmp, c, _ = encoded
  cfg, work = _write_config_file(tmp_path, c), str(tmp_path / "w")
  code, out = _cli(capsys, cfg, work)
  assert code == 0, out.err
  code, out = _cli(capsys, cfg, work, "--mode=sample")
  assert code == 0, out.err
  z = np.load(os.path.join(work, "samples", "sample_step1_1step.npz"))
  assert z["arr_0"].shape == (8, 32, 32, 3) and z["arr_0"].dtype == np.uint8
  assert z["arr_1"].shape == (8,) and set(z["arr_1"]) <= {0, 1}
  built, sampler, step, params = inference_setup(c, work)
  spec = built.named_samplers[0][1]
  lat = Sampler(built).generate(params, 8, spec)  # the same noise and classes, not decoded
  assert lat.shape == (8, 4, 4, 4)
  vae, vparams = load_vae(c.data.vae_weights)
  pixels = np.clip(np.asarray(vae_decode(vparams, lat, vae=vae)), -1, 1)
  np.testing.assert_allclose(sampler.generate(params, 8, spec), pixels, atol=1e-4)
  assert np.abs(to_uint8(pixels).astype(int) - z["arr_0"]).max() <= 1


def test_tfds_images_are_cropped_and_text_is_refused():
  tfds = pytest.importorskip("tensorflow_datasets")
  from cmjax.data.raw_images import TfdsImages
  with tfds.testing.mock_data(num_examples=4):
    src = TfdsImages("cifar10")
    image, label = src.read(1, 16)
    raw = np.asarray(src.source[1]["image"])
    from PIL import Image
    np.testing.assert_array_equal(image, adm_center_crop_arr(Image.fromarray(raw), 16))
    assert src.num_classes == 10 and 0 <= label < 10 and len(src) == 4
    with pytest.raises(DataError, match="no 'image' feature .* encode reads images"):
      TfdsImages("imdb_reviews")
