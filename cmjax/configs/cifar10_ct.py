"""CT-LPIPS on unconditional CIFAR-10 (Song et al. 2023, "Consistency Models", CIFAR-10 table
[Table 1, number unverified], row "CT (LPIPS)"): FID 8.70 (1-step) / 5.83 (2-step) [unverified:
recalled, not found in the stored sources].

Settings are those of the authors' code [code: openai/consistency_models_cifar10
configs/cifar10_ve_ct_adaptive.py + launch.sh "CT with adaptive schedules and the LPIPS metric":
--config.optim.lr=0.0004 --config.training.loss_norm='lpips' --config.training.dsm_target
--config.training.start_scales=2 --config.training.end_scales=150 --config.training.start_ema=0.9].
  python scripts/convert_lpips_weights.py --out lpips_vgg.npz
  python launch.py --config configs/cifar10_ct.py --workdir runs/cifar10_ct \
    --config.ct.lpips_weights=lpips_vgg.npz

Deviations:
- lr: the config file says 2e-4, launch.sh 4e-4; 4e-4 is used here.
- mu(k) divides by N(k) - 1 as both official codes do (ct.mu_divisor='official'); the paper's
  printed formula is ct.mu_divisor='paper'. N(k) is computed exactly (the code uses float32).
- LPIPS: torch lpips v0.1 VGG weights converted for cmjax (the CM code uses a JAX port).
- 2-step t_mid 0.5853 as for CD [unverified for CT].
Variants: ':smoke' (tiny net, 2 steps, l2_squared instead of LPIPS).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_ct")
  c = paper_base.base("ct")
  paper_base.cifar10(c, random_flip=True)  # data.random_flip = True [code: default_cifar10_configs.py]
  paper_base.cifar10_ncsnpp(c, dropout=0.0)  # model.dropout = 0.0 [code: cifar10_ve_ct_adaptive.py]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # t_min, t_max, data_std [code]
  c.ct.update(s0=2, s1=150, total_steps=800_000,  # start/end_scales, K = n_iters [code: launch.sh]
              mu0=0.9, mu_divisor="official",  # start_ema = 0.9, adaptive target EMA [code]
              rho=7.0, distance="lpips", lpips_resize=224,  # [code: jcm/losses.py]
              # Converted weights: python scripts/convert_lpips_weights.py --out lpips_vgg.npz
              lpips_weights="")  # pass --config.ct.lpips_weights=lpips_vgg.npz
  c.optim.update(name="radam", lr=4e-4,  # --config.optim.lr=0.0004 [code: launch.sh]
                 b1=0.9, b2=0.999, eps=1e-8,  # [code: cifar10_ve_ct_adaptive.py, defaults]
                 warmup_steps=0, warmup_kimg=0.0,  # its RAdam ignores optim.warmup [code: jcm/losses.py]
                 grad_clip=0.0)  # grad_clip = inf [code]
  c.train.update(batch_size=512, num_steps=800_000,  # [code: cifar10_ve_ct_adaptive.py]
                 ema_rate=0.9999, ema_warmup=False,  # model.ema_rate [code]
                 precision="fp32", checkpoint_every=10_000, log_every=100)  # fp32 JAX [code]
  c.eval.t_mid = paper_base.KARRAS_18_INDEX_11  # [unverified for CT, see docstring]
  return paper_base.apply_smoke(c, tokens)
