"""ECT on class-conditional ImageNet 64x64 (Geng et al., "Consistency Models Made Easy", ICLR 2025,
ImageNet-64 table). The paper tunes EDM2-S/M/L/XL; its run script is the EDM2-S one (batch 128,
100k iterations), tuning EDM2's released EDM2-S [code: locuslab/ect imgnet branch
run_imgnet_ecm.sh, README]. Published FID: ECT (EDM2-XL, whose released checkpoint is batch 1024 x
100k) 2.49 (1-step) / 1.67 (2-step) [sCM Table 1; ect imgnet README]; the EDM2-S row [unverified:
not found in stored sources, read the ECT ImageNet table before quoting it]. ECT's recipe starts
from EDM2's released network (NVlabs/edm2 README, posthoc-reconstructions; read by
cmjax.weights.edm2_pickle, docs/weights.md):
  python launch.py --config configs/imagenet64_ect.py --workdir runs/imagenet64_ect \
    --config.train.init_from=edm2-img64-s-1073741-0.075.pkl

Settings: ct_train.py --cond=1 --arch=edm2 --preset=edm2-img64-s (channels 192, lr 1e-3, betas
(0.9, 0.99), decay 2000 = lr 1e-3 / sqrt(max(step / 2000, 1)), dropout 0.40 at res <= 16, P_mean
-0.8, P_std 1.6) --fp16=0 --mid_t=1.526 --duration=12.8 --tick=6.4 --batch=128 --double 500
--optim Adam --wt snrpk --transfer=.../edm2-img64-s-1073741-0.075.pkl, defaults q=4, c=0.06, k=8,
b=1, ema_beta=0.9999, xflip off [code: imgnet-branch ct_train.py, run_imgnet_ecm.sh]. Network:
EDM2's Precond + UNet (imgnet-branch training/networks_edm2.py = NVlabs/edm2's, plus
dropout_res): EDM's preconditioning without CM's sigma_min shift (param.boundary_shift=False), and
MPConv's forced weight normalisation in train mode (cmjax: the train step projects the weights
with edm2_force_normalize before each step, in EDM2's order, for every 'edm2' run).

Deviations the lead must know:
- INITIALISATION: without --config.train.init_from=<the EDM2-S pickle> this config trains from
  scratch (the default is empty: the file is not shipped). ECT's --transfer copies the file's
  EMA network; cmjax takes its 'ema' entry too; the file's log-variance head is not used (ECT's
  Precond has none).
- EMA: 0.9999 per step (the script's ema_beta, its "online" EMA); the branch also keeps EDM2's
  post-hoc EMA (phema.py), which cmjax does not have; which EMA gave the published FIDs is
  [unverified].
- Data: TFDS imagenet_resized (box resize) vs EDM2's centre-crop preprocessing (paper_base).
Variants: ':smoke' (tiny EDM2 network: 16 channels, 2 levels, 16 channels per head; 2 steps).
"""
from cmjax.configs import paper_base
from cmjax.models import model_config
from cmjax.models.edm2_unet import edm2_config


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "imagenet64_ect")
  c = paper_base.base("ect")
  c.data.update(name="imagenet64", random_flip=False)  # xflip off [code]; no flips [sCM G.1]
  c.model = model_config("edm2", **edm2_config(
      "s",  # EDM2-S: 192 channels, mult (1,2,3,4), 3 blocks, attention at 16/8 [code: train_edm2.py]
      dropout=0.40,  # preset dropout=0.40 [code: imgnet ct_train.py]
      dropout_max_res=16))  # dropres=16 -> UNet(dropout_res=16) [code]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0,  # EDM2 sigma_data 0.5 [code]
                 boundary_shift=False)  # EDM2's Precond: no sigma_min shift [code: networks_edm2]
  c.ect.update(p_mean=-0.8, p_std=1.6,  # preset mean/std [code: imgnet ct_train.py]
               q=4.0, k=8.0, b=1.0,  # -q 4.0, -k, -b defaults [code]
               c=0.06,  # -c 0.06 default (= 0.00054 sqrt(12288) as in iCT) [code]
               weighting="snr_plus",  # --wt snrpk: 1/t^2 + 1/sd^2 [code: locuslab/ect imgnet branch]
               stage_steps=25_000,  # --double 500 ticks x 6.4 kimg / 128 [code: run_imgnet_ecm.sh]
               initial_exponent=1)  # 1/q^(stage+1) as in the CIFAR code [unverified for this branch]
  c.optim.update(name="adam", lr=1e-3,  # preset lr 1e-3 [code: imgnet ct_train.py]
                 lr_decay="inv_sqrt", lr_decay_steps=2000,  # decay=2000 (ref_batches) [code]
                 b1=0.9, b2=0.99, eps=1e-8,  # preset betas (0.9, 0.99), eps 1e-8 [code]
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # lr_rampup_kimg 0, none [code]
  c.train.update(batch_size=128,  # --batch=128 [code: run_imgnet_ecm.sh]
                 duration_kimg=12_800,  # --duration=12.8 Mimg = 100k steps [code; README]
                 ema_rate=0.9999, ema_warmup=False,  # --ema_beta default [code]
                 precision="fp32",  # --fp16=0 [code: run_imgnet_ecm.sh]
                 checkpoint_every=5_000, log_every=100)
  c.eval.t_mid = 1.526  # --mid_t=1.526 [code: run_imgnet_ecm.sh]
  c = paper_base.apply_smoke(c, tokens)
  if "smoke" in tokens:
    c.model.channels_per_head = 16  # 2 heads at 32x32 in the 16/32-channel smoke network
  return c
