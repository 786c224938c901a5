"""EDM diffusion on unconditional CIFAR-10 (Karras et al. 2022, "Elucidating the Design Space...").

Default: EDM Table 2, "VP, uncond" row (config F, DDPM++ + EDM preconditioning/loss), FID 1.97
at NFE 35 (deterministic Heun, 18 steps) [paper abstract; code: NVlabs/edm README, run
cifar10-32x32-uncond-vp = `train.py --cond=0 --arch=ddpmpp` with the defaults below]
(that 1.97 is the VP and not the VE row, VE 1.98, is recalled [unverified]).
Diffusion model: no 1-/2-step FID; sampled with eval.ode_steps = 18 Heun steps.
  python launch.py --config configs/cifar10_edm.py --workdir runs/cifar10_edm

Variant ':ncsnpp' = the teacher of configs/cifar10_cd.py: the CM paper's own EDM run on NCSN++
[code: openai/consistency_models_cifar10 configs/cifar10_k_ve.py: batch 512, 400k iterations,
Adam 1e-3 with a 10M-image warm-up, EMA half-life 0.5M images (no ramp-up), dropout 0.13,
random flips, no augmentation]; the CM paper's Table lists EDM at FID 2.04 [unverified].
  python launch.py --config configs/cifar10_edm.py:ncsnpp --workdir runs/cifar10_edm_ncsnpp

Deviations (default variant):
- (none left for the augmentation: EDM's pipeline, --augment=0.12 = x-flip, y-flip, scaling,
  rotation, anisotropy, translation, each with p = 0.12, x-flips at 50%, with its 9 labels fed to
  the network, is data.augment=0.12 with preset 'edm_cifar10' and model.augment_dim=9
  [code: edm train.py, training/augment.py]; EDM's --xflip is off, so data.random_flip=False.)
- EDM replaces NaN/Inf gradients by 0/+-1e5 (nan_to_num) and keeps going; cmjax stops (or skips
  with train.skip_nonfinite).
Variants: ':smoke' (tiny net, 2 steps), ':ncsnpp' (above), combinable as ':ncsnpp,smoke'.
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_edm", known=("ncsnpp",))
  c = paper_base.base("edm")
  paper_base.cifar10(c, random_flip=False)  # --xflip default False [code: edm train.py]
  c.edm.update(p_mean=-1.2, p_std=1.2)  # ln sigma ~ N(-1.2, 1.2^2) [paper EDM Table 1]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # [paper EDM Table 1]
  c.optim.update(name="adam", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8,  # [code: edm train.py]
                 warmup_kimg=10_000, grad_clip=0.0)  # lr_rampup_kimg=10000 [code: edm training_loop.py]
  c.train.update(batch_size=512,  # --batch default [code: edm train.py]
                 duration_kimg=200_000,  # --duration=200 Mimg = 390,625 steps [code: edm train.py]
                 ema_halflife_kimg=500, ema_rampup_ratio=0.05,  # --ema=0.5 Mimg; ramp-up [code]
                 precision="fp32",  # --fp16 default False [code: edm train.py]
                 checkpoint_every=10_000, log_every=100)
  c.eval.update(ode_steps=18, ode_solver="heun")  # 18 steps, NFE 35 [paper EDM Table 2; README]
  if "ncsnpp" in tokens:  # the CM paper's teacher [code: consistency_models_cifar10 cifar10_k_ve.py]
    paper_base.cifar10_ncsnpp(c, dropout=0.13)  # model.dropout = 0.13, fourier_scale 16 [code]
    c.train.update(duration_kimg=0.0, num_steps=400_000,  # n_iters = 400001 [code]
                   ema_halflife_kimg=500, ema_rampup_ratio=0.0)  # ema_rate = 0.5^(512/5e5) [code]
    # Adam lr 1e-3, warmup int(1e7 / 512) steps = 10M images: as above [code: cifar10_k_ve.py]
    c.data.update(random_flip=True)  # random flips, no augmentation [code: cifar10_k_ve.py]
  else:
    paper_base.cifar10_ddpmpp(c, dropout=0.13)  # --dropout=0.13 [code: edm train.py]
    c.data.update(augment=0.12, augment_preset="edm_cifar10")  # --augment=0.12 [code: edm train.py]
    c.model.update(augment_dim=9)  # augment_dim=9 when --augment > 0 [code: edm train.py]
  return paper_base.apply_smoke(c, tokens)
