"""CD-LPIPS on unconditional CIFAR-10 (Song et al. 2023, "Consistency Models", CIFAR-10 table
[Table 1, number unverified], row "CD (LPIPS)"): FID 3.55 (1-step) / 2.93 (2-step) [checked
against sCM Table 1, which quotes them].

Settings are those of the authors' code [code: openai/consistency_models_cifar10
configs/cifar10_ve_cd.py + launch.sh "CD with the LPIPS metric"]. Train the teacher first (the
CM teacher is an EDM model on NCSN++, configs/cifar10_edm.py:ncsnpp), convert LPIPS weights:
  python launch.py --config configs/cifar10_edm.py:ncsnpp --workdir runs/cifar10_edm_ncsnpp
  python scripts/convert_lpips_weights.py --out lpips_vgg.npz
  python launch.py --config configs/cifar10_cd.py --workdir runs/cifar10_cd \
    --config.cd.teacher_workdir=runs/cifar10_edm_ncsnpp --config.cd.lpips_weights=lpips_vgg.npz

Deviations:
- The teacher: the CM paper distils its own EDM run (JAX, NCSN++); cifar10_edm.py:ncsnpp
  reproduces that run's config, not its weights. The student starts from the teacher's EMA
  weights (finetune=True), so both must be NCSN++ (a DDPM++ cifar10_edm run cannot be used).
- The teacher check (cmjax/teacher.py) needs the same backbone for init_from_teacher; dropout is
  exempt, so the paper's student dropout 0.0 and teacher dropout 0.13 work as they are.
- LPIPS: the CM code's LPIPS is the JAX port of lpips v0.1 VGG; cmjax converts the torch
  lpips weights (same network, numerics not bit-equal). Inputs are resized to 224 (bilinear).
- 2-step t_mid: 0.5853 (index 11 of the 18-point Karras grid from sigma_max) [unverified
  against the CM sampling notebook; the paper tunes it].
Variants: ':smoke' (tiny net, 2 steps, l2_squared instead of LPIPS); it still needs a teacher
of the same tiny NCSN++: a configs/cifar10_edm.py:ncsnpp,smoke run.
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_cd")
  c = paper_base.base("cd")
  paper_base.cifar10(c, random_flip=True)  # data.random_flip = True [code: default_cifar10_configs.py]
  paper_base.cifar10_ncsnpp(c, dropout=0.0)  # model.dropout = 0.0 [code: cifar10_ve_cd.py]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # t_min, t_max, data_std [code]
  c.cd.update(num_scales=18, solver="heun", rho=7.0,  # N = 18, Heun [code: cifar10_ve_cd.py]
              mu=0.0,  # target = online params under stop-grad (CM paper Alg. 2 with mu = 0) [code]
              distance="lpips", lpips_resize=224,  # loss_norm='lpips', 224 bilinear [code: jcm/losses.py]
              # Converted weights: python scripts/convert_lpips_weights.py --out lpips_vgg.npz
              lpips_weights="",  # pass --config.cd.lpips_weights=lpips_vgg.npz
              teacher_workdir="",  # pass --config.cd.teacher_workdir=<a cifar10_edm.py:ncsnpp run>
              init_from_teacher=True)  # training.finetune = True [code]
  c.optim.update(name="radam", lr=4e-4,  # lr 0.0004 [code: launch.sh]
                 b1=0.9, b2=0.999, eps=1e-8,  # beta1, default beta2, eps [code]
                 warmup_steps=0, warmup_kimg=0.0,  # its RAdam ignores optim.warmup [code: jcm/losses.py]
                 grad_clip=0.0)  # grad_clip = inf [code]
  c.train.update(batch_size=512, num_steps=800_000,  # [code: cifar10_ve_cd.py n_iters = 800001]
                 ema_rate=0.9999, ema_warmup=False,  # model.ema_rate [code]
                 precision="fp32", checkpoint_every=10_000, log_every=100)  # fp32 JAX [code]
  c.eval.t_mid = paper_base.KARRAS_18_INDEX_11  # [unverified, see docstring]
  return paper_base.apply_smoke(c, tokens)
