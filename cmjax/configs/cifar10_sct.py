"""sCT on unconditional CIFAR-10 (Lu & Song 2024, "Simplifying, Stabilizing and Scaling
Continuous-Time Consistency Models", ICLR 2025, Table 1 row "sCT (ours)"): FID 2.85 (1-step) /
2.06 (2-step, t_mid = 1.1) [paper Table 1, Sec. 5.2]. No official code.
  python launch.py --config configs/cifar10_sct.py --workdir runs/cifar10_sct

Settings [paper App. G.2, "CIFAR-10"]: RAdam, lr 1e-4, betas (0.9, 0.99), eps 1e-8, no lr
schedule; proposal P_mean -1.0, P_std 1.4; EMA half-life 0.5 Mimg; dropout 0.20 for sCT;
tangent normalisation c = 0.1, tangent warm-up H = 10k; batch = the teacher's, 512 [App. G.1:
EDM settings]; 2-step t_mid = 1.1.

Deviations the lead must know:
- INITIALISATION: "For both sCT and sCD, we initialize from the teacher diffusion model" (a
  TrigFlow DDPM++ trained with EDM's settings, FID 2.15) [App. G.2]. Train such a teacher
  (method 'trigflow' on this config's model and data) and pass
  --config.train.init_workdir=<its workdir>; without it this config trains from scratch.
- Network: the paper's DDPM++ uses TrigFlow, c_noise(t) = t with positional embeddings (as
  here) and "adaptive double normalization" (pixel-normalised AdaGN scale/shift, Sec. 4.1),
  which cmjax's SongUNet does not have (it adds the embedding, as EDM's SongUNet does).
- [unverified] training iterations (not stated for CIFAR-10; 400k here, the length of the
  paper's ECT comparison, App. E.3), EMA ramp-up (none here), random x-flips ("we follow the
  settings of Score SDE on CIFAR10", Sec. 5.2; score_sde flips), fp32 (FP16 is only stated for
  ImageNet).
Variants: ':smoke' (tiny net, 2 steps).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_sct")
  c = paper_base.base("sct")
  paper_base.cifar10(c, random_flip=True)  # [unverified] Score SDE settings [paper Sec. 5.2]
  paper_base.cifar10_ddpmpp(c, dropout=0.2)  # DDPM++ [App. G.1]; dropout 0.20 for sCT [App. G.2]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # t_max = arctan(80/sd) [App. G.2]
  c.sct.update(p_mean=-1.0, p_std=1.4,  # proposal [paper App. G.2]
               tangent_warmup_steps=10_000,  # H = 10000 [paper App. G.2]
               tangent_norm_c=0.1,  # c = 0.1 [paper App. G.2, Sec. 4.2]
               adaptive_weight=True)  # learned w(t) [paper Sec. 4.2, Eq. 8]
  c.optim.update(name="radam", lr=1e-4, b1=0.9, b2=0.99, eps=1e-8,  # [paper App. G.2]
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # "without lr schedulers" [App. G.2]
  c.train.update(batch_size=512,  # the teacher's batch [paper App. G.1-G.2]
                 num_steps=400_000,  # [unverified] not stated for CIFAR-10
                 ema_halflife_kimg=500, ema_rampup_ratio=0.0,  # half-life 0.5 Mimg [App. G.2]
                 precision="fp32",  # [unverified]
                 checkpoint_every=10_000, log_every=100)
  c.eval.t_mid = 1.1  # intermediate TrigFlow time [paper Sec. 5.2, App. G.2]
  return paper_base.apply_smoke(c, tokens)
