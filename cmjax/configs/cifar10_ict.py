"""iCT on unconditional CIFAR-10 (Song & Dhariwal 2023, "Improved Techniques for Training
Consistency Models", ICLR 2024, CIFAR-10 table [table number unverified], row "iCT"): FID
2.83 (1-step) / 2.46 (2-step); "iCT-deep" (2x depth, variant ':deep') 2.51 / 2.24 [FIDs checked
against sCM Table 1, which quotes them].
No official code. From scratch, no teacher:
  python launch.py --config configs/cifar10_ict.py --workdir runs/cifar10_ict

Verified: the loss (pseudo-Huber c = 0.00054 sqrt(d), lambda = 1/(s_{i+1} - s_i), lognormal
index sampling, doubling curriculum 10 -> 1280, no EMA teacher) [paper, iCT Sec. 3];
Fourier scale 0.02 instead of 16 [paper; restated by sCM Sec. 4.1]; batch 1024 and 400k
iterations (for iCT-deep) [code: locuslab/ect README comparison table].
[unverified] (recalled, not found in stored sources; check the iCT appendix before relying on
them): dropout 0.3, RAdam, lr 1e-4, betas (0.9, 0.999), EMA 0.99993, no lr warm-up, random
x-flips, fp32, t_mid 0.821 (the value ECT's code uses for CIFAR-10).
Deviations: the network is EDM's NCSN++ port (as in the CM code), which we believe iCT used.
Variants: ':smoke' (tiny net, 2 steps); ':deep' (iCT-deep: twice the residual blocks).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_ict", known=("deep",))
  c = paper_base.base("ict")
  paper_base.cifar10(c, random_flip=True)  # [unverified] CM code default (score_sde) random flips
  paper_base.cifar10_ncsnpp(c, dropout=0.3,  # dropout 0.3 [unverified]
                            fourier_scale=0.02)  # Fourier scale 0.02 [paper; sCM Sec. 4.1]
  if "deep" in tokens:
    c.model.num_blocks = 8  # "NCSN++ (2x depth)" [code: ect README]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # as CM [paper]
  c.ict.update(s0=10, s1=1280, total_steps=400_000,  # N(k) curriculum, K = 400k [paper; objectives/ict.py]
               p_mean=-1.1, p_std=2.0,  # lognormal index sampling [paper; objectives/ict.py]
               c_per_sqrt_dim=0.00054, rho=7.0)  # c = 0.00054 sqrt(3072) = 0.030 [paper; objectives/ict.py]
  c.optim.update(name="radam", lr=1e-4,  # [unverified] RAdam, lr 1e-4 (not stated in the iCT paper)
                 b1=0.9, b2=0.999, eps=1e-8,  # [unverified] optimiser defaults
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # [unverified] none
  c.train.update(batch_size=1024, num_steps=400_000,  # [code: ect README table, iCT-deep row]
                 ema_rate=0.99993, ema_warmup=False,  # EMA 0.99993 [unverified]
                 precision="fp32",  # [unverified]
                 checkpoint_every=10_000, log_every=100)
  c.eval.t_mid = 0.821  # [unverified] 2-step middle level; ECT's CIFAR-10 default [code: ect ct_train.py]
  return paper_base.apply_smoke(c, tokens)
