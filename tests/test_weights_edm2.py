"""Reading EDM2's network pickles (cmjax.weights.edm2_pickle through edm_pickle.read_edm_pickle /
load_edm_network): the file's Precond + UNet become cmjax's EDM2UNet with EDM's preconditioning
and reproduce EDM2's own outputs; its log-variance head is loaded; a file whose layout does not
fit is one line naming the first parameter, with expected and found shapes.

Frozen assets tests/assets/edm2_pkl_*, made by /work/scratch/edm2_pkl_gen/gen_edm2_pkl.py run as
  cd <clone of github.com/NVlabs/edm2 at commit 4bf8162f601bcc09472ce8a32dd0cbe8889dc8fc> &&
  python gen_edm2_pkl.py OUTDIR        (torch 2.13.0+cpu)
with NVlabs/edm2's own classes: training.networks_edm2.Precond(img_resolution=8, img_channels=3,
label_dim=4, model_channels=8, dropout=0.0, use_fp16=True, channel_mult=[1, 2], num_blocks=1,
attn_resolutions=[4], channels_per_head=8, logvar_channels=8) (45,635 U-Net parameters; 2 heads
at 4x4), every parameter and buffer drawn by numpy (nonzero gains of both signs, weights at random
scales), saved as EDM2's training_loop.py saves a snapshot: EasyDict(encoder=StandardRGBEncoder(),
dataset_kwargs=..., loss_fn=EDM2Loss(P_mean=-0.8, P_std=1.6)) with
ema = deepcopy(net).cpu().eval().requires_grad_(False).to(torch.float16), pickle.dump -> edm2_pkl_tiny.pkl.
The outputs in edm2_pkl_tiny.npz come from that pickle loaded back (pickle.load(f)['ema']
.to(torch.float32).eval(), as reconstruct_phema.py loads its inputs; CPU: float32): D with one-hot
labels, D_none (labels None), logvar (return_logvar=True), on x (NHWC here), sigma = [0.002, 0.3,
2.5, 80]. edm2_pkl_latent.pkl: a 4-channel one-level Precond (model_channels=4, logvar_channels=4)
with StabilityVAEEncoder as encoder (as edm2-img512-*: its state holds numpy arrays) and its
output D_latent on z; edm2_pkl_mismatch.pkl: that network with model_channels recorded as 8.
"""
import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.models.edm2_precond import EDM2Preconditioner
from cmjax.parametrization import EDMPreconditioner
from cmjax.weights import WeightsFileError, load_pickle
from cmjax.weights.edm_pickle import load_edm_network, make_model, read_edm_pickle, to_cmjax
from cmjax.weights.files import check_same_backbone, load_network_file

ASSETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
TINY, LATENT, MISMATCH = (os.path.join(ASSETS, f"edm2_pkl_{t}.pkl")
                          for t in ("tiny", "latent", "mismatch"))
REF = os.path.join(ASSETS, "edm2_pkl_tiny.npz")


def _rel(a, ref):
  return float(np.max(np.abs(np.asarray(a, np.float64) - ref)) / np.max(np.abs(ref)))


def _denoise(net, x, sigma, labels):
  model = make_model(net.model_kwargs)
  fn = jax.jit(lambda p, x, s, lab: net.precond(
      lambda xi, c: model.apply({"params": p}, xi, c, class_labels=lab), x, s))
  return fn(net.params, jnp.asarray(x), jnp.asarray(sigma), labels)


def test_edm2_pickle_reproduces_edm2_outputs():
  z = np.load(REF)
  net = load_edm_network(TINY)
  read = net.read
  assert (read.precond_class, read.backbone_class) == ("Precond", "UNet")
  assert read.tensors["unet.enc.8x8_conv.weight"].dtype == np.float16  # stored as EDM2 stores it
  assert read.precond_config["sigma_data"] == 0.5 and read.precond_kwargs["logvar_channels"] == 8
  assert isinstance(net.precond, EDMPreconditioner) and net.precond.sigma_data == 0.5
  kw = net.model_kwargs
  assert kw["name"] == "edm2" and kw["label_dim"] == 4 and kw["model_channels"] == 8
  assert kw["channel_mult"] == (1, 2) and kw["attn_resolutions"] == (4,)
  assert kw["channels_per_head"] == 8 and kw["out_channels"] == 0 and kw["dropout_max_res"] == 0
  unet = net.params
  assert unet["enc_8x8_conv"]["kernel"].shape == (3, 3, 4, 8)  # + the constant-1 channel
  assert "attn_qkv" in unet["dec_4x4_in0"] and "attn_qkv" in unet["enc_4x4_block0"]
  assert float(unet["out_gain"]) != 0.0
  np.testing.assert_array_equal(unet["emb_fourier"]["freqs"],
                                read.tensors["unet.emb_fourier.freqs"].astype(np.float32))
  assert _rel(_denoise(net, z["x"], z["sigma"], jnp.asarray(z["labels"])), z["D"]) < 1e-5
  assert _rel(_denoise(net, z["x"], z["sigma"], None), z["D_none"]) < 1e-5
  assert _rel(z["D_none"], z["D"]) > 1e-2  # the labels matter
  # The log-variance head is read too (it only weights EDM2's loss; sampling ignores it).
  head = EDM2Preconditioner(0.5, logvar_channels=8)
  assert _rel(head.logvar(net.logvar_params, jnp.asarray(z["sigma"])), z["logvar"]) < 1e-5
  # The file's other entries are read inertly: EDM2's loss settings, the encoder's class.
  data = load_pickle(TINY)
  assert data["loss_fn"].class_name == "EDM2Loss" and data["loss_fn"].state["P_std"] == 1.6
  assert data["encoder"].class_name == "StandardRGBEncoder"


def test_edm2_latent_pickle_with_numpy_arrays_in_its_encoder():
  """edm2-img512-style: StabilityVAEEncoder's scale/bias are numpy arrays in the pickle."""
  z = np.load(REF)
  enc = load_pickle(LATENT)["encoder"]
  assert enc.class_name == "StabilityVAEEncoder"
  raw_std = np.array([4.17, 4.62, 3.71, 3.28], np.float32)  # EDM2 encoders.py defaults
  np.testing.assert_array_equal(enc.state["scale"].array, np.float32(0.5) / raw_std)
  assert enc.state["bias"].array.dtype == np.float32 and enc.state["bias"].array.shape == (4,)
  net = load_network_file(LATENT)
  assert net.model_kwargs["channel_mult"] == (1,) and net.read.precond_config["img_channels"] == 4
  assert net.logvar_params["logvar_linear"]["kernel"].shape == (4, 1)
  assert _rel(_denoise(net, z["z"], z["sigma"], jnp.asarray(z["labels"])), z["D_latent"]) < 1e-5


def _one_line(fn) -> str:
  with pytest.raises(WeightsFileError) as e:
    fn()
  assert "\n" not in str(e.value)
  return str(e.value)


def test_a_file_that_does_not_fit_is_one_line():
  assert _one_line(lambda: load_edm_network(MISMATCH)) == (
      f"{MISMATCH}: parameter 'unet.emb_fourier.freqs' does not fit cmjax edm2: expected (8,), "
      f"found (4,)")
  read = read_edm_pickle(TINY)

  def with_tensors(**change):
    tensors = dict(read.tensors)
    for k, v in change.items():
      tensors[k.replace("__", ".")] = v
    return dataclasses.replace(read, tensors=tensors)

  conv = read.tensors["unet.enc.4x4_block0.conv_res0.weight"]  # (16, 16, 3, 3)
  bad = with_tensors(unet__enc__4x4_block0__conv_res0__weight=conv[:, :, :1])
  assert _one_line(lambda: to_cmjax(bad)).endswith(
      "parameter 'unet.enc.4x4_block0.conv_res0.weight' does not fit cmjax edm2: expected "
      "(16, 16, 3, 3), found (16, 16, 1, 3)")
  emb = read.tensors["unet.emb_label.weight"]  # (16, 4)
  assert "expected (16, 4), found (4, 16)" in _one_line(
      lambda: to_cmjax(with_tensors(unet__emb_label__weight=emb.T)))
  extra = with_tensors(unet__enc__8x8_conv__bias=np.zeros(8, np.float16))
  assert "unknown EDM2 parameter name 'unet.enc.8x8_conv.bias'" in _one_line(lambda: to_cmjax(extra))
  gone = dataclasses.replace(read, tensors={k: v for k, v in read.tensors.items()
                                            if k != "unet.out_gain"})
  assert _one_line(lambda: to_cmjax(gone)).endswith("the file lacks cmjax edm2 parameter "
                                                    "'out_gain' ()")
  for kwargs, msg in (({"resample_filter": [1, 3, 3, 1]}, "cmjax's EDM2UNet has only [1, 1]"),
                      ({"skip_scale": 2.0}, "argument(s) ['skip_scale'] have no cmjax equivalent"),
                      ({"channel_mult": [1, 2, 2, 2, 2]}, "cannot take the file's settings"),
                      ({"channel_mult": [1, 2, 2]}, "has no place in cmjax's EDM2 network")):
    odd = dataclasses.replace(read, backbone_kwargs={**read.backbone_kwargs, **kwargs})
    assert msg in _one_line(lambda: to_cmjax(odd))


def test_edm2_file_against_a_config_model():
  """What train.init_from / cd.teacher_file / sample.weights check: the file's backbone against
  config.model (dropout may differ), one line at the first difference."""
  from cmjax.models import model_config

  net = load_network_file(TINY, "train.init_from")
  same = model_config(**net.model_kwargs)
  same.dropout, same.dropout_max_res = 0.4, 4  # regularisation may differ (ECT's dropout)
  check_same_backbone(net, same, "train.init_from")
  wide = model_config(**{**net.model_kwargs, "model_channels": 16})
  assert _one_line(lambda: check_same_backbone(net, wide, "train.init_from")) == (
      "train.init_from: the file's network has model.model_channels=8 but the config has 16")
  adm = model_config("adm")
  assert "holds a 'edm2' network but model.name is 'adm'" in _one_line(
      lambda: check_same_backbone(net, adm, "train.init_from"))
