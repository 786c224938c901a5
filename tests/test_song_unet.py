"""SongUNet (EDM's DDPM++ / NCSN++): parameter counts of the CIFAR-10 presets, behaviour of tiny
configurations, the FIR resampling ops and the calling convention of make_model_fn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _helpers import golden_params
from cmjax.models.song_layers import downsample, upsample
from cmjax.models.song_unet import SongUNet, ddpmpp_cifar10, ncsnpp_cifar10
from cmjax.parametrization import EDMPreconditioner, make_model_fn

# Reference parameter counts of EDM's PyTorch SongUNet (NVlabs/edm training/networks.py,
# commit 0a2ff34) with train.py's CIFAR-10 settings, 32x32x3, unconditional, augment_dim=0:
# * DDPM++ (--arch=ddpmpp): 55,732,739, as counted from the PyTorch model in
#   github.com/xinyugao233/spectral-diffusion-playground docs/experiment_05_clean_room_models.md
#   ("SongUNet/DDPM++ ... channel_mult=[2,2,2], and 55,732,739 parameters"); 55.73M.
# * NCSN++ (--arch=ncsnpp): no published count found; 56,395,523 computed from the EDM source by
#   `_edm_count` below (a shape-by-shape transcription of SongUNet.__init__; the Fourier
#   frequencies are a buffer, not a parameter). `_edm_count` also gives 55,732,739 for DDPM++.
EDM_DDPMPP_CIFAR10 = 55_732_739
EDM_NCSNPP_CIFAR10 = 56_395_523


def _edm_count(res=32, cin=3, cout_img=3, label_dim=0, augment_dim=0, mc=128, mults=(2, 2, 2),
               emb_mult=4, num_blocks=4, attn=(16,), noise_mult=1, encoder="standard",
               decoder="standard"):
  """Parameters of EDM's SongUNet.__init__, from its layer shapes (Linear/Conv2d/GroupNorm)."""
  lin = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
  conv = lambda i, o, k: k * k * i * o + o  # noqa: E731
  emb, noise = mc * emb_mult, mc * noise_mult

  def block(ci, co, attention=False, resample=False):
    n = 2 * ci + conv(ci, co, 3) + lin(emb, co) + 2 * co + conv(co, co, 3)
    n += conv(ci, co, 1) if (ci != co or resample) else 0
    return n + (2 * co + conv(co, 3 * co, 1) + conv(co, co, 1) if attention else 0)

  total = lin(noise, emb) + lin(emb, emb) + (lin(label_dim, noise) if label_dim else 0)
  total += lin(augment_dim, noise, bias=False) if augment_dim else 0
  c, caux, skips = cin, cin, []
  for level, mult in enumerate(mults):
    r = res >> level
    if level == 0:
      total, c = total + conv(c, mc, 3), mc
    else:
      total += block(c, c, resample=True)
      if encoder == "skip":
        total += conv(caux, c, 1)
      if encoder == "residual":
        total, caux = total + conv(caux, c, 3), c
    skips.append(c)
    for _ in range(num_blocks):
      total, c = total + block(c, mc * mult, attention=r in attn), mc * mult
      skips.append(c)
  for level in reversed(range(len(mults))):
    r = res >> level
    if level == len(mults) - 1:
      total += block(c, c, attention=True) + block(c, c)
    else:
      total += block(c, c, resample=True)
    for idx in range(num_blocks + 1):
      total += block(c + skips.pop(), mc * mults[level], attention=idx == num_blocks and r in attn)
      c = mc * mults[level]
    if decoder == "skip" or level == 0:
      total += 2 * c + conv(c, cout_img, 3)
  return total


def _count(model, res=32, channels=3, **kw):
  """Parameter count by jax.eval_shape: nothing is allocated."""
  x, c = jnp.zeros((1, res, res, channels)), jnp.zeros((1,))
  shapes = jax.eval_shape(lambda k: model.init(k, x, c, **kw), jax.random.key(0))
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes["params"]))


def test_cifar10_parameter_counts_match_edm():
  assert repr(SongUNet()) == repr(ddpmpp_cifar10())  # the class defaults are the DDPM++ preset
  assert _edm_count() == EDM_DDPMPP_CIFAR10
  assert _edm_count(noise_mult=2, encoder="residual") == EDM_NCSNPP_CIFAR10
  for model, ref in ((ddpmpp_cifar10(), EDM_DDPMPP_CIFAR10),
                     (ncsnpp_cifar10(), EDM_NCSNPP_CIFAR10)):
    n = _count(model)
    assert abs(n - ref) <= 0.01 * ref, (n, ref)
    assert n == ref  # in fact exact
  # Class labels (10) and EDM's augmentation labels (9) add the map_label / map_augment layers.
  assert (_count(ddpmpp_cifar10(label_dim=10, augment_dim=9))
          == _edm_count(label_dim=10, augment_dim=9))
  out = jax.eval_shape(lambda: ddpmpp_cifar10().init_with_output(
      jax.random.key(0), jnp.zeros((2, 32, 32, 3)), jnp.zeros((2,)))[0])
  assert out.shape == (2, 32, 32, 3)


TINY = dict(model_channels=16, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,))


def _tiny(kind="ddpmpp", **kw):
  preset = ddpmpp_cifar10 if kind == "ddpmpp" else ncsnpp_cifar10
  return preset(**{**TINY, "dropout": 0.0, **kw})


def _init(model, x, noise=1.0, **kw):
  """Initialised params, each leaf perturbed by N(0, 0.1^2): EDM initialises the residual branch
  outputs at 1e-5 scale, so at init the noise level would hardly reach the output."""
  params = model.init(jax.random.key(0), x, jnp.full((x.shape[0],), noise), **kw)["params"]
  rng = np.random.default_rng(1)  # numpy: no XLA compile per leaf shape
  return jax.tree.map(lambda p: p + 0.1 * rng.standard_normal(p.shape).astype(p.dtype), params)


@pytest.mark.parametrize("kind,extra", [("ddpmpp", {}), ("ncsnpp", {}),
                                        ("ncsnpp", dict(encoder_type="skip", decoder_type="skip"))])
@pytest.mark.slow
def test_tiny_forward_shape_and_noise_dependence(kind, extra):
  model = _tiny(kind, **extra)
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))
  raw = model.init(jax.random.key(0), x, jnp.ones((2,)))["params"]
  assert _count(model, res=8) == sum(p.size for p in jax.tree.leaves(raw))
  assert _count(model, res=8) == _edm_count(
      res=8, mc=16, mults=(1, 2), num_blocks=1, attn=(4,), noise_mult=model.channel_mult_noise,
      encoder=model.encoder_type, decoder=model.decoder_type)
  out0 = model.apply({"params": raw}, x, jnp.ones((2,)))
  assert out0.shape == (2, 8, 8, 3) and 0 < float(jnp.max(jnp.abs(out0))) < 1e-2  # init_zero
  params = _init(model, x)
  a = model.apply({"params": params}, x, jnp.array([0.1, 0.1]))
  b = model.apply({"params": params}, x, jnp.array([0.1, 2.0]))
  assert a.shape == (2, 8, 8, 3) and bool(jnp.all(jnp.isfinite(a)))
  np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)  # examples are independent
  assert float(jnp.max(jnp.abs(a[1] - b[1]))) > 1e-3
  out_wide = _tiny(kind, out_channels=5, **extra)
  assert out_wide.init_with_output(jax.random.key(0), x, jnp.ones((2,)))[0].shape == (2, 8, 8, 5)


@pytest.mark.slow
def test_class_labels_condition_the_output():
  model = _tiny(label_dim=4)
  x = jnp.tile(jax.random.normal(jax.random.key(3), (1, 8, 8, 3)), (2, 1, 1, 1))
  noise = jnp.full((2,), 0.5)
  params = _init(model, x, class_labels=jnp.array([0, 1]))
  def apply(labels):
    return model.apply({"params": params}, x, noise, class_labels=labels)
  out = apply(jnp.array([0, 3]))
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3  # same image, different class
  np.testing.assert_allclose(out, apply(jax.nn.one_hot(jnp.array([0, 3]), 4)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(apply(None), apply(jnp.zeros((2, 4))), rtol=1e-6, atol=1e-6)
  # label_dropout=1 drops every label in training: the same as no labels (same dropout key).
  dropped = _tiny(label_dim=4, label_dropout=1.0)
  rng = {"dropout": jax.random.key(9)}
  a = dropped.apply({"params": params}, x, noise, train=True, class_labels=jnp.array([0, 3]),
                    rngs=rng)
  b = dropped.apply({"params": params}, x, noise, train=True, class_labels=None, rngs=rng)
  np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="class_labels"):
    apply(jnp.zeros((2, 3)))


@pytest.mark.slow
def test_dropout_train_vs_eval_and_make_model_fn():
  model = _tiny("ncsnpp", dropout=0.3)
  x = jax.random.normal(jax.random.key(4), (2, 8, 8, 3))
  params = _init(model, x)
  noise = jnp.array([0.3, 1.5])
  ev = model.apply({"params": params}, x, noise)  # train=False needs no rng
  np.testing.assert_array_equal(ev, model.apply({"params": params}, x, noise, train=False))
  def tr(seed):
    return model.apply({"params": params}, x, noise, train=True,
                       rngs={"dropout": jax.random.key(seed)})
  np.testing.assert_array_equal(tr(5), tr(5))
  assert float(jnp.max(jnp.abs(tr(5) - tr(6)))) > 1e-3
  assert float(jnp.max(jnp.abs(tr(5) - ev))) > 1e-3
  # The objectives' calling convention: per-example dropout keys through make_model_fn.
  fn = jax.jit(make_model_fn(model, EDMPreconditioner(0.5)))  # one compile, not one per vmapped op
  t = jnp.array([0.5, 2.0])
  keys = jax.random.split(jax.random.key(7), 2)
  d = fn(params, x, t, keys)
  assert d.shape == x.shape
  np.testing.assert_array_equal(d, fn(params, x, t, keys))
  assert float(jnp.max(jnp.abs(d - fn(params, x, t)))) > 1e-4


def _np_down(x, taps):
  f = np.outer(taps, taps) / np.sum(taps) ** 2
  k, p = len(taps), (len(taps) - 1) // 2
  xp = np.pad(x, ((p, p), (p, p)))
  n = (xp.shape[0] - k) // 2 + 1
  return np.array([[np.sum(f * xp[2 * i:2 * i + k, 2 * j:2 * j + k]) for j in range(n)]
                   for i in range(n)])


def _np_up(x, taps):
  """PyTorch conv_transpose2d(x, 4 f f^T / (sum f)^2, stride=2, padding=(k-1)//2), one channel."""
  f = 4 * np.outer(taps, taps) / np.sum(taps) ** 2
  k, p, h = len(taps), (len(taps) - 1) // 2, x.shape[0]
  full = np.zeros((2 * (h - 1) + k,) * 2)
  for i in range(h):
    for j in range(h):
      full[2 * i:2 * i + k, 2 * j:2 * j + k] += x[i, j] * f
  return full[p:full.shape[0] - p, p:full.shape[0] - p]


@pytest.mark.parametrize("taps,size", [((1, 1), 6), ((1, 1), 7), ((1, 3, 3, 1), 6)])
def test_resampling_matches_edm_conv_semantics(taps, size):
  """The box filter takes the pooling / repeat path (odd sizes: the convolution); both must be
  EDM's depthwise convolutions, per channel."""
  x = np.random.default_rng(0).standard_normal((size, size, 2)).astype(np.float32)
  xj = jnp.asarray(x)[None]
  tol = dict(rtol=1e-5, atol=1e-6)
  for c in range(2):
    np.testing.assert_allclose(downsample(xj, taps)[0, :, :, c], _np_down(x[..., c], taps), **tol)
    np.testing.assert_allclose(upsample(xj, taps)[0, :, :, c], _np_up(x[..., c], taps), **tol)
  assert downsample(xj, taps).shape == (1, size // 2, size // 2, 2)
  assert upsample(xj, taps).shape == (1, 2 * size, 2 * size, 2)


def test_xavier_init_and_bad_arguments():
  model = _tiny()
  x = jnp.zeros((2, 8, 8, 3))
  p = model.init(jax.random.key(0), x, jnp.zeros((2,)))["params"]
  w = np.asarray(p["map_layer1"]["kernel"])  # (64, 64): bound sqrt(6 / 128)
  bound = np.sqrt(6 / 128)
  assert np.abs(w).max() <= bound and abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound
  assert np.abs(p["dec_8x8_aux_conv"]["kernel"]).max() < 1e-5  # init_zero = 1e-5 xavier
  assert not np.any(p["enc_8x8_conv"]["bias"])
  for kw, msg in ((dict(embedding_type="sinusoidal"), "embedding_type"),
                  (dict(encoder_type="progressive"), "encoder_type"),
                  (dict(decoder_type="residual"), "decoder_type"),
                  (dict(resample_filter=(1, 2, 1)), "resample_filter")):
    with pytest.raises(ValueError, match=msg):
      _tiny(**kw).init(jax.random.key(0), x, jnp.zeros((2,)))
  with pytest.raises(ValueError, match="divisible"):
    _tiny(channel_mult=(1, 2, 2, 2)).init(jax.random.key(0), jnp.zeros((2, 12, 12, 3)),
                                          jnp.zeros((2,)))
  with pytest.raises(ValueError, match="unknown SongUNet arguments"):
    ddpmpp_cifar10(channels=64)




# Outputs of EDM's own PyTorch SongUNet (training/networks.py, commit 0a2ff34; torch 2.13 CPU,
# float32) for the tiny configurations below, with the `golden_params` weights loaded into it
# (Dense (in, out) -> Linear (out, in), Conv (k, k, in, out) -> (out, in, k, k), the Fourier
# buffer set to our frequencies): out[0, 0, :3, 0], sum(out), sum(|out|).
EDM_TORCH_GOLDEN = {
    "ddpmpp": ([-0.318087, -0.238053, -0.365101], 25.749542, 156.522430),
    "ncsnpp": ([0.431444, 0.285661, 0.903667], 59.386543, 166.584839),
}


@pytest.mark.parametrize("kind", ["ddpmpp", "ncsnpp"])
def test_matches_edm_pytorch_outputs(kind):
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 3)).astype(np.float32))
  extra = {}
  if kind == "ddpmpp":  # class labels and augmentation labels too
    extra = dict(class_labels=jnp.array([2, 0]),
                 augment_labels=jnp.asarray(rng.standard_normal((2, 2)).astype(np.float32)))
  model = _tiny(kind, **(dict(label_dim=3, augment_dim=2) if kind == "ddpmpp" else {}))
  params = golden_params(model, x, **extra)
  out = model.apply({"params": params}, x, jnp.array([-0.7, 0.4]), **extra)
  corner, total, abs_total = EDM_TORCH_GOLDEN[kind]
  np.testing.assert_allclose(out[0, 0, :3, 0], corner, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(float(out.sum()), total, rtol=1e-4)
  np.testing.assert_allclose(float(jnp.abs(out).sum()), abs_total, rtol=1e-4)


def test_chosen_by_name_in_the_config():
  """config.model.name = 'song_unet' builds EDM's DDPM++ (55,732,739 parameters, no allocation);
  its fields are rejected for other backbones."""
  from cmjax import config_base
  from cmjax.config_validation import ConfigError, validate_config
  from cmjax.models import build_model

  from cmjax.configs import cifar10_cd, cifar10_ect
  from cmjax.models import model_config

  c = config_base.get_config()
  c.model = model_config("song_unet", channel_mult=(2, 2, 2), dropout=0.13)
  validate_config(c, 1)
  m = build_model(c.model)
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,))))
  assert sum(x.size for x in jax.tree.leaves(shapes)) == 55_732_739
  for shipped, ref in ((cifar10_ect.get_config(), EDM_DDPMPP_CIFAR10),   # the configs users run
                       (cifar10_cd.get_config(), EDM_NCSNPP_CIFAR10)):
    m = build_model(shipped.model)
    shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,))))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == ref
  c = config_base.get_config()
  c.model.model_channels = 64  # a song_unet field on the default 'unet'
  with pytest.raises(ConfigError, match="model_channels is not an argument of model 'unet'"):
    validate_config(c, 1)
