"""iCT on class-conditional ImageNet 64x64 (Song & Dhariwal 2023, "Improved Techniques for
Training Consistency Models", ICLR 2024, ImageNet-64 table [table number unverified], row
"iCT"): FID 4.02 (1-step) / 3.20 (2-step); "iCT-deep" 3.25 / 2.77 [FIDs checked against sCM
Table 1, which quotes them]. No official code. From scratch, no teacher:
  python launch.py --config configs/imagenet64_ict.py --workdir runs/imagenet64_ict

Verified: the loss and curricula as on CIFAR-10 (c = 0.00054 sqrt(d) = 0.060 for 64x64x3)
[paper, iCT Sec. 3]; dropout only in blocks at resolution <= 16 ("following Simple
Diffusion and iCT", sCM App. G.2). The network is ADM-based [details unverified].
[unverified] (recalled, not found in stored sources; check the iCT appendix before relying on
them): batch 4096, 800k iterations (= curriculum K), Adam, lr 1e-4, betas (0.9, 0.999), EMA
0.99997, dropout rate 0.2, P_mean/P_std as CIFAR-10 (-1.1, 2.0), mixed precision (fp32 kept
here per the project rule), t_mid 1.526 (the value ECT's ImageNet script uses).

Deviations the lead must know:
- Network: EDM's ADM (DhariwalUNet) conditions its blocks by AdaGN scale-shift; sCM (Sec. 4.1)
  reports that iCT found AdaGN makes CM training diverge, so iCT's ADM variant conditions
  differently [details unverified]. cmjax's adm has no switch for this.
- Data: TFDS imagenet_resized (box resize) vs ADM's centre-crop preprocessing (paper_base).
- Batch 4096 of 64x64 images on ADM needs train.grad_accum and/or train.sharding='fsdp' on
  most machines (the update is unchanged by grad_accum).
Variants: ':smoke' (tiny net, 2 steps); ':deep' (iCT-deep: twice the residual blocks).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "imagenet64_ict", known=("deep",))
  c = paper_base.base("ict")
  paper_base.imagenet64_adm(c, dropout=0.2,  # rate [unverified]
                            dropout_max_res=16)  # res <= 16 only [paper sCM App. G.2 citing iCT]
  if "deep" in tokens:
    c.model.num_blocks = 6  # iCT-deep: 2x depth [unverified: ADM's 3 blocks doubled]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # as CM [paper]
  c.ict.update(s0=10, s1=1280, total_steps=800_000,  # curriculum; K = iterations [unverified K]
               p_mean=-1.1, p_std=2.0,  # [unverified for ImageNet]
               c_per_sqrt_dim=0.00054, rho=7.0)  # c = 0.00054 sqrt(12288) = 0.060 [paper]
  c.optim.update(name="adam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8,  # [unverified]
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # [unverified] none
  c.train.update(batch_size=4096, num_steps=800_000,  # [unverified]
                 ema_rate=0.99997, ema_warmup=False,  # [unverified]
                 precision="fp32",  # [unverified] (the paper likely used mixed precision)
                 checkpoint_every=5_000, log_every=100)
  c.eval.t_mid = 1.526  # [unverified] ECT's ImageNet-64 value [code: ect run_imgnet_ecm.sh]
  return paper_base.apply_smoke(c, tokens)
