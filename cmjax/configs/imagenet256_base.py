"""Shared settings of the latent ImageNet-256 configs (configs/imagenet256_*.py): SD-VAE latents
(data.name='latent', 32x32x4, 1000 classes; docs/latent.md) and class-conditional DiT-*/2 with two
time conditions. Sources: [paper ...], [code: repo/file], [unverified] as in paper_base.

The user fills three paths (one line each when missing, before anything compiles):
  data.vae_weights   the converted SD VAE (scripts/convert_sd_vae.py); MeanFlow's code uses
                     sd-vae-ft-mse ('vae': 'mse', Gsunshine/meanflow configs/default.py)
  data.path          the latent data set (--mode encode writes it)
  encode.path        ImageNet's train/ folder (class sub-folders), for --mode encode
"""
from cmjax.configs import paper_base
from cmjax.models import model_config
from cmjax.models.dit import dit_config

IMAGENET_TRAIN = 1_281_167  # ILSVRC-2012 train images
STEPS_PER_EPOCH_256 = IMAGENET_TRAIN // 256  # 5004 at batch 256 (the remainder dropped)


def latent_imagenet256(c, random_flip: bool):
  """ImageNet 256 latents: ADM centre crop to 256, SD VAE, scaling 0.18215, posterior sample per
  step [code: Gsunshine/meanflow utils/vae_util.py cached_encode]; labels from the class folders."""
  c.data.update(name="latent", resolution=256, path="", vae_weights="", random_flip=random_flip,
                latent_sample=True, read_threads=8, prefetch=2)
  c.encode.update(source="folder", path="", labels="subfolders", batch_size=64, shard_size=10_000)


def dit2(c, size: str, **kw):
  """DiT-{size}/2 on 32x32x4 latents, 1000 classes, t and a second time (MeanFlow's t - r,
  the shortcut's d), no learned sigma [code: both repos' DiT]."""
  c.model = model_config("dit", **dit_config(f"{size}/2", input_size=32, in_channels=4,
                                             label_dim=1000, time_conditions=2, learn_sigma=False,
                                             **kw))


def meanflow(size: str, variant: str, name: str):
  """MeanFlow on ImageNet 256 with DiT-{size}/2 (the imagenet256_meanflow_* configs).

  Settings: the authors' JAX code's defaults (Gsunshine/meanflow configs/default.py, the MF-B/4
  recipe of run_b4.yml): batch 256, Adam(W, decay 0) lr 1e-4 b2 0.95, EMA 0.9999, (t, r) from
  logit-normal(-0.4, 1.0) sorted, 25% with r != t, adaptive weight p = 1, eps 0.01, guidance in the
  target omega = 1, kappa = 0.5, class dropout 0.1, 240 epochs (each cited at its line below).
  [unverified] per model size: the paper's appendix table gives each size its own epochs and
  guidance (omega, kappa, interval); the stored sources hold only the code's B/4 defaults, used here
  for every size: check the paper's table before a paper-scale run.
  Deviations: the code's r = t mask takes the first 75% of each batch, cmjax draws it per example;
  the code feeds t and t - r to the DiT, as cmjax's mean_flow family does.
  """
  tokens = paper_base.parse_variant(variant, name)
  c = paper_base.base("meanflow")
  # The code's LatentDataset ignores its use_flip and stores unflipped latents only
  # [code: Gsunshine/meanflow utils/vae_util.py LatentDataset.__getitem__]: no flips.
  latent_imagenet256(c, random_flip=False)
  # The code's DiT always has the null row and drops no label itself (class_dropout_prob=0.0 in
  # MeanFlow.setup); the objective drops them [code: meanflow.py, models/models_dit.py].
  dit2(c, size, class_dropout_prob=0.0, null_class=True)
  c.meanflow.update(tr_sampler="v0",  # t, r = max, min of two draws [code: meanflow.py sample_tr]
                    p_mean_t=-0.4, p_std_t=1.0,  # P_mean -0.4, P_std 1.0 [code: default.py]
                    p_mean_r=-0.4, p_std_r=1.0,  # the same distribution for r [code: sample_tr]
                    ratio_r_neq_t=0.25,  # data_proportion 0.75 have r = t [code: default.py]
                    norm_p=1.0, norm_eps=0.01,  # norm_p 1.0, norm_eps 0.01 [code: default.py]
                    num_classes=1000,
                    cfg_omega=1.0, cfg_kappa=0.5,  # omega 1.0, kappa 0.5 [code: default.py]
                    cfg_t_start=0.0, cfg_t_end=1.0,  # t_start 0, t_end 1 [code: default.py]
                    class_dropout_prob=0.1)  # class_dropout_prob 0.1 [code: default.py]
  c.optim.update(name="adam", lr=1e-4,  # adamw, weight_decay 0 = Adam; lr 1e-4 [code: train.py]
                 b1=0.9, b2=0.95,  # optax default b1; adam_b2 0.95 [code: default.py]
                 eps=1e-8, warmup_steps=0, grad_clip=0.0,  # no warm-up or clipping [unverified]
                 weight_decay=0.0)
  c.train.update(batch_size=256,  # batch_size 256 [code: default.py, run_b4.yml]
                 num_steps=240 * STEPS_PER_EPOCH_256,  # 240 epochs [code: run_b4.yml; paper unverified]
                 ema_rate=0.9999, ema_warmup=False,  # ema_val 0.9999, 'const' [code: run_b4.yml]
                 precision="fp32",  # half_precision False [code: default.py]
                 checkpoint_every=10_000, log_every=100)
  c.eval.update(t_mid=0.5,  # 2-NFE through t = 0.5 [unverified: the code samples 1 step]
                batch_size=128, fid_num_samples=50_000)
  return paper_base.apply_smoke(c, tokens)


def shortcut(size: str, variant: str, name: str):
  """Shortcut models on ImageNet 256 with DiT-{size}/2 (see configs/imagenet256_shortcut_b2.py)."""
  tokens = paper_base.parse_variant(variant, name)
  c = paper_base.base("shortcut")
  # tf.image.random_flip_left_right [code: kvfrans/shortcut-models utils/datasets.py]
  latent_imagenet256(c, random_flip=True)
  dit2(c, size, class_dropout_prob=0.1)  # --model.class_dropout_prob 0.1 [code: README]
  c.shortcut.update(denoise_timesteps=128,  # 'denoise_timesteps': 128 [code: train.py]
                    bootstrap_every=8,  # 'bootstrap_every': 8 [code: train.py]
                    bootstrap_ema=True,  # 'bootstrap_ema': 1 [code: train.py]
                    target_decay=0.999,  # 'target_update_rate': 0.999 [code: train.py]
                    clip=4.0)  # the targets' clip to [-4, 4] [code: targets_shortcut.py]
  c.optim.update(name="adam", lr=1e-4, b1=0.9, b2=0.999,  # 'lr', 'beta1', 'beta2' [code: train.py]
                 weight_decay=0.1,  # optax.adamw weight_decay 0.1 [code: train.py]
                 eps=1e-8, warmup_steps=0, grad_clip=0.0)  # 'warmup': 0: constant lr [code]
  c.train.update(batch_size=256, num_steps=810_000,  # --batch_size 256 --max_steps 810_000 [code: README]
                 ema_rate=0.9999, ema_warmup=False,  # unused for samples: 'use_ema': 0 [code: train.py]
                 precision="fp32", checkpoint_every=10_000, log_every=100)
  c.eval.update(t_mid=0.5, batch_size=128, fid_num_samples=50_000)
  c.eval.params = c.sample.params = "raw"  # the code samples the online params ('use_ema': 0)
  return paper_base.apply_smoke(c, tokens)
