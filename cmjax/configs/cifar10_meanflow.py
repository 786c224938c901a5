"""MeanFlow on unconditional CIFAR-10 (Geng, Deng, Bai, Kolter, He, "Mean Flows for One-step
Generative Modeling", 2025), 1-step sampling z_0 = z_1 - u(z_1, r = 0, t = 1):
FID 2.92 (1-NFE, the paper's CIFAR-10 table, sampler 'v0') [paper; table number unverified];
the authors' improved script cifar10_v1.sh (this config's default) reaches ~2.9 FID at 16,000
epochs and its released checkpoint ~2.80 [code: Gsunshine/py-meanflow README].
  python launch.py --config configs/cifar10_meanflow.py --workdir runs/cifar10_meanflow
  python launch.py --config configs/cifar10_meanflow.py:v0 --workdir runs/cifar10_meanflow_v0

Settings: train.py --dataset=cifar10 --batch_size=128 (x 8 GPUs) --lr=0.0006 --epochs=16000
--tr_sampler=v1 --P_mean_t -0.6 --P_std_t 1.6 --P_mean_r -4.0 --P_std_r 1.6 --warmup_epochs 200
--norm_p 0.75 --ratio 0.75 --dropout 0.2 --use_edm_aug; ':v0' is cifar10_v0.sh: --tr_sampler=v0
with P_mean/P_std (-2.0, 2.0) for both t and r [code: Gsunshine/py-meanflow 1f6d72d
meanflow/scripts/cifar10_v{0,1}.sh, train_arg_parser.py, models/model_configs.py].

Deviations the lead must know:
- BACKBONE: the authors' SongUNet (DDPM++: 128 channels, mult (2, 2, 2), 4 blocks, attention at 16,
  FIR [1,3,3,1], channel_mult_noise 2) embeds t and h = t - r each with a positional embedding
  (sin/cos swapped, 256 channels) and CONCATENATES them before map_layer0 (512 -> 512)
  [code: models/unet.py SongUNet.forward]; cmjax's song_unet concatenates the embedding of its
  second time (c_noise_2) the same way.
- AUGMENTATION: the code uses EDM's augment pipe, AugmentPipe(p=0.12, xflip=1e8, yflip=0, scale=1,
  rotate_frac=0, aniso=1, translate_frac=1) (x-flips, fractional translation, isotropic and
  anisotropic scaling) and feeds its 6 labels to the net (augment_dim = 6) [code:
  meanflow/training/train_loop.py, models/model_configs.py]: data.augment=0.12 with preset
  'meanflow_cifar10' and model.augment_dim=6 here (random_flip off: the pipe flips).
- EMA: the code updates its EMA (0.9999) every 16 steps with decay 0.9999^16 [code: models/ema.py];
  cmjax updates every step with 0.9999 (the same horizon).
- Warm-up: linear from 1e-8 over 200 epochs = 9,600 steps [code: train.py LinearLR].
Variants: ':v0' (the paper's sampler), ':smoke' (tiny net, 2 steps).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_meanflow", known=("v0",))
  c = paper_base.base("meanflow")
  paper_base.cifar10(c, random_flip=False)  # the augment pipe flips (see docstring)
  c.data.update(augment=0.12, augment_preset="meanflow_cifar10")  # --use_edm_aug [code: train_loop.py]
  paper_base.cifar10_ddpmpp(c, dropout=0.2)  # --dropout 0.2 [code: cifar10_v1.sh]
  c.model.update(augment_dim=6,  # its 6 labels [code: models/model_configs.py]
                 channel_mult_noise=2,  # 'channel_mult_noise': 2 [code: models/model_configs.py]
                 resample_filter=(1, 3, 3, 1))  # 'resample_filter': [1,3,3,1] [code: model_configs.py]
  c.meanflow.update(tr_sampler="v1",  # --tr_sampler=v1 [code: cifar10_v1.sh]
                    p_mean_t=-0.6, p_std_t=1.6,  # --P_mean_t -0.6 --P_std_t 1.6 [code: cifar10_v1.sh]
                    p_mean_r=-4.0, p_std_r=1.6,  # --P_mean_r -4.0 --P_std_r 1.6 [code: cifar10_v1.sh]
                    ratio_r_neq_t=0.75,  # --ratio 0.75 [code: cifar10_v1.sh]
                    norm_p=0.75,  # --norm_p 0.75 [code: cifar10_v1.sh]
                    norm_eps=1e-3)  # --norm_eps default 1e-3 [code: train_arg_parser.py]
  if "v0" in tokens:
    c.meanflow.update(tr_sampler="v0",  # --tr_sampler=v0 [code: cifar10_v0.sh]
                      p_mean_t=-2.0, p_std_t=2.0,  # --P_mean_t -2.0 --P_std_t 2.0 [code: cifar10_v0.sh]
                      p_mean_r=-2.0, p_std_r=2.0)  # --P_mean_r -2.0 --P_std_r 2.0 [code: cifar10_v0.sh]
  c.optim.update(name="adam", lr=6e-4,  # Adam, not AdamW; --lr=0.0006 [code: train.py, cifar10_v1.sh]
                 b1=0.9, b2=0.999,  # --optimizer_betas default [0.9, 0.999] [code: train_arg_parser.py]
                 eps=1e-8,  # torch.optim.Adam's default eps [code: train.py]
                 warmup_steps=9_600,  # 200 epochs x 48 steps (6,250 images per GPU / 128, drop_last) [code]
                 warmup_kimg=0.0, grad_clip=0.0)  # no gradient clipping [code: training/train_loop.py]
  c.train.update(batch_size=1024,  # --batch_size=128 per GPU x 8 GPUs [code: cifar10_v1.sh]
                 num_steps=768_000,  # 16,000 epochs x 48 steps; the README rounds it to 800k [code]
                 ema_rate=0.9999, ema_warmup=False,  # --ema_decay 0.9999, EMA starts as a copy [code: ema.py]
                 precision="fp32",  # no autocast; the loss runs with autocast disabled [code: meanflow.py]
                 checkpoint_every=10_000, log_every=100)
  c.eval.t_mid = 0.5  # the 2-step sampler's intermediate time [unverified: the code samples 1 step]
  return paper_base.apply_smoke(c, tokens)
