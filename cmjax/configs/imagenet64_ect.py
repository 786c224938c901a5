"""ECT on class-conditional ImageNet 64x64 (Geng et al., "Consistency Models Made Easy", ICLR 2025,
ImageNet-64 table). The paper tunes EDM2-S/M/L/XL; its run script is the EDM2-S one (batch 128,
100k iterations) [code: locuslab/ect imgnet branch run_imgnet_ecm.sh, README]. Published FID:
ECT (EDM2-XL, whose released checkpoint is batch 1024 x 100k) 2.49 (1-step) / 1.67 (2-step)
[sCM Table 1; ect imgnet README]; the EDM2-S row [unverified: not found in stored sources, read
the ECT ImageNet table before quoting it].
  python launch.py --config configs/imagenet64_ect.py --workdir runs/imagenet64_ect

Settings: ct_train.py --cond=1 --arch=edm2 --preset=edm2-img64-s (lr 1e-3, betas (0.9, 0.99),
lr decay ref 2000 batches, dropout 0.40 at res <= 16, P_mean -0.8, P_std 1.6) --fp16=0
--mid_t=1.526 --duration=12.8 --tick=6.4 --batch=128 --double 500 --optim Adam --wt snrpk,
defaults q=4, c=0.06, k=8, b=1, ema_beta=0.9999, xflip off [code: imgnet-branch ct_train.py].

Deviations the lead must know:
- NETWORK: EDM's ADM (DhariwalUNet) instead of EDM2-S (magnitude-preserving layers,
  forced weight normalisation, 280M); EDM2's preconditioning has no sigma_min shift.
- INITIALISATION: ECT tunes the pretrained EDM2-S (edm2-img64-s-1073741-0.075.pkl). cmjax reads
  no .pkl; start from an EDM-trained ADM run of this model and data with
  --config.train.init_workdir=<its workdir>; without it this config trains from scratch.
- LR: EDM2's 1e-3 with lr = 1e-3 / sqrt(max(step / 2000, 1)) is tuned to magnitude-preserving
  layers and cmjax has no decay schedule; here a constant 1e-4 (choice, not a paper value: the lr
  of EDM's ADM ImageNet run [code: edm README], and near the decayed 1e-3/sqrt(50) = 1.4e-4).
- EMA: 0.9999 per step (the script's ema_beta); the branch also ships EDM2's post-hoc EMA
  (phema.py), whose use for the published FIDs is [unverified].
- Data: TFDS imagenet_resized (box resize) vs EDM2's centre-crop preprocessing (paper_base).
Variants: ':smoke' (tiny net, 2 steps).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "imagenet64_ect")
  c = paper_base.base("ect")
  paper_base.imagenet64_adm(c, dropout=0.40,  # preset dropout=0.40 [code: imgnet ct_train.py]
                            dropout_max_res=16)  # dropres=16 [code]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # EDM2 sigma_data 0.5 [code]
  c.ect.update(p_mean=-0.8, p_std=1.6,  # preset mean/std [code: imgnet ct_train.py]
               q=4.0, k=8.0, b=1.0,  # -q 4.0, -k, -b defaults [code]
               c=0.06,  # -c 0.06 default (= 0.00054 sqrt(12288) as in iCT) [code]
               weighting="snr_plus",  # --wt snrpk: 1/t^2 + 1/sd^2 [code: locuslab/ect imgnet branch]
               stage_steps=25_000,  # --double 500 ticks x 6.4 kimg / 128 [code: run_imgnet_ecm.sh]
               initial_exponent=1)  # 1/q^(stage+1) as in the CIFAR code [unverified for this branch]
  c.optim.update(name="adam", lr=1e-4,  # DEVIATION: see docstring (paper 1e-3 + decay)
                 b1=0.9, b2=0.99, eps=1e-8,  # preset betas (0.9, 0.99), eps 1e-8 [code]
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # none [code]
  c.train.update(batch_size=128,  # --batch=128 [code: run_imgnet_ecm.sh]
                 duration_kimg=12_800,  # --duration=12.8 Mimg = 100k steps [code; README]
                 ema_rate=0.9999, ema_warmup=False,  # --ema_beta default [code]
                 precision="fp32",  # --fp16=0 [code: run_imgnet_ecm.sh]
                 checkpoint_every=5_000, log_every=100)
  c.eval.t_mid = 1.526  # --mid_t=1.526 [code: run_imgnet_ecm.sh]
  return paper_base.apply_smoke(c, tokens)
