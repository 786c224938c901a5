"""Shared helpers of the paper configs (configs/cifar10_*.py, configs/imagenet64_*.py): data sets,
the EDM-style backbones of the papers, and the common ':smoke' shrink.

Sources are cited as [paper ...] (the paper's text) or [code: repo/file] (the authors' code);
[unverified] marks a value that could not be checked against either: check it before relying on it.
Variants: comma-separated tokens after the config path, e.g. configs/cifar10_edm.py:ncsnpp,smoke.
"""
from cmjax import config_base
from cmjax.models import model_config
from cmjax.models.adm_unet import ADM_IMAGENET64
from cmjax.models.song_unet import DDPMPP_CIFAR10, NCSNPP_CIFAR10

# The 2-step middle level of CM-style samplers on CIFAR-10: index 11 of the N = 18 Karras grid
# counted from sigma_max, (80^(1/7) + 11/17 (0.002^(1/7) - 80^(1/7)))^7 = 0.5853 (Karras et al. 2022, Eq. 5).
KARRAS_18_INDEX_11 = 0.5853481231945422


def base(method: str):
  """config_base with `method` set."""
  c = config_base.get_config()
  c.method = method
  return c


def parse_variant(variant: str, name: str, known=()) -> set:
  """The set of comma-separated tokens of `variant`; 'smoke' is always known."""
  tokens = {t for t in variant.split(",") if t}
  allowed = {"smoke", *known}
  bad = sorted(tokens - allowed)
  if bad:
    raise ValueError(f"unknown variant {bad[0]!r} of {name}; known: {sorted(allowed)}")
  return tokens


def cifar10(c, random_flip: bool):
  """TFDS cifar10 (32x32x3), unconditional as in every paper here (labels unused)."""
  c.data.update(name="cifar10", random_flip=random_flip)


def cifar10_ddpmpp(c, dropout: float):
  """EDM's --arch=ddpmpp SongUNet (55.7M params) [code: NVlabs/edm train.py]."""
  c.model = model_config("song_unet", **{**DDPMPP_CIFAR10, "dropout": dropout}, augment_dim=0,
                         label_dim=0)


def cifar10_ncsnpp(c, dropout: float, fourier_scale: float = 16.0):
  """EDM's --arch=ncsnpp SongUNet (56.4M params) = score_sde's CIFAR-10 NCSN++ used by the CM
  code (biggan blocks, FIR [1,3,3,1], progressive_input='residual') [code: NVlabs/edm train.py,
  openai/consistency_models_cifar10 configs/cifar10_ve_cd.py]."""
  c.model = model_config("song_unet", **{**NCSNPP_CIFAR10, "dropout": dropout,
                                         "fourier_scale": fourier_scale}, augment_dim=0, label_dim=0)


def imagenet64_adm(c, dropout: float, dropout_max_res: int = 0):
  """TFDS imagenet_resized/64x64, class-conditional, on EDM's ADM (DhariwalUNet: 192 channels,
  mult (1,2,3,4), 3 blocks, attention at 32/16/8) [code: NVlabs/edm train.py --arch=adm].
  Deviation for every ImageNet config: TFDS's imagenet_resized box-resizes the whole image, while
  ADM/EDM2/ECT/sCM centre-crop then resize (EDM2 dataset_tool); FIDs are not comparable as is."""
  c.data.update(name="imagenet64", random_flip=False)  # no flips on ImageNet [paper sCM App. G.1]
  c.model = model_config("adm", **{**ADM_IMAGENET64, "dropout": dropout},
                         dropout_max_res=dropout_max_res, label_dropout=0.0)


def apply_smoke(c, tokens: set):
  """':smoke': a tiny network, batch 8, 2 steps, checkpoint and log every step, for tests.

  Everything else (the method's hyperparameters, optimiser, EMA, precision, data) stays the
  paper's. Where the method needs LPIPS weights, distance 'lpips' becomes 'l2_squared' (no
  weights file in tests); CD/sCD still need cd/scd.teacher_workdir (a smoke teacher run).
  """
  if "smoke" not in tokens:
    return c
  if c.model.name == "dit":  # the latent configs (configs/imagenet256_*.py): a 1-block DiT
    c.model.update(hidden_size=32, depth=1, num_heads=2)
    return _smoke_run(c)
  res = 64 if c.data.name == "imagenet64" else 32
  # ADM's attention has 64 channels per head (EDM's DhariwalUNet; cmjax's adm drops attention
  # below 64 channels), so its tiny net keeps 32/64 channels; SongUNet's is single-head: 16.
  width = 32 if c.model.name == "adm" else 16
  c.model.update(model_channels=width, channel_mult=(1, 2), num_blocks=1,
                 attn_resolutions=(res // 2,))
  for method in ("cd", "ct"):
    if c.method == method and c[method].distance == "lpips":
      c[method].distance = "l2_squared"  # LPIPS needs converted VGG weights; not in tests
  return _smoke_run(c)


def _smoke_run(c):
  """The run-length part of ':smoke': batch 8, 2 steps, checkpoints and logs every step."""
  c.train.update(batch_size=8, num_steps=2, duration_kimg=0.0, grad_accum=1, checkpoint_every=1,
                 log_every=1, sample_every=0)
  c.eval.update(num_samples=1000, batch_size=8, grid_rows=2, ode_steps=2, fid_num_samples=16)
  return c
