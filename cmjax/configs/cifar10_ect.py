"""ECT on unconditional CIFAR-10 (Geng et al., "Consistency Models Made Easy", ICLR 2025; CIFAR-10
table, row "ECT"/"ECM (400k)", batch 128): FID 3.60 (1-step) / 2.11 (2-step) [code: locuslab/ect
README; also sCM Table 1]. Variant ':200k' is the README's command (run_ecm.sh, 25.6 Mimg):
FID 3.86 / 2.15 [code: README].
  python launch.py --config configs/cifar10_edm.py --workdir runs/cifar10_edm     # the EDM model
  python launch.py --config configs/cifar10_ect.py --workdir runs/cifar10_ect \
      --config.train.init_workdir=runs/cifar10_edm

Settings: run_ecm.sh = ct_train.py --cond=0 --arch=ddpmpp --duration=25.6 --tick=12.8
--double=250 --batch=128 --lr=0.0001 --optim=RAdam --dropout=0.2 --augment=0.0
--transfer=edm-cifar10-32x32-uncond-vp.pkl [code: locuslab/ect run_ecm.sh, ct_train.py].

Deviations the lead must know:
- INITIALISATION: ECT tunes from the EMA weights of the pretrained EDM DDPM++ model
  (--transfer=.../edm-cifar10-32x32-uncond-vp.pkl). cmjax cannot read EDM's .pkl; train the
  teacher with configs/cifar10_edm.py (same DDPM++; dropout may differ) and start from it with
  --config.train.init_workdir=runs/cifar10_edm. Without it the run starts from scratch, which
  converges much more slowly; then begin with a denoising stage: --config.ect.initial_exponent=0.
- Preconditioning: the ECT code applies no sigma_min shift in training and shifts by 0.003 when
  sampling (locuslab/ect networks.py ECMPrecond); cmjax uses the CM shift with param.sigma_min = 0.002 throughout.
Variants: ':smoke' (tiny net, 2 steps), ':200k' (above).
"""
from cmjax.configs import paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_ect", known=("200k",))
  c = paper_base.base("ect")
  paper_base.cifar10(c, random_flip=False)  # --augment=0.0, --xflip default False [code: ct_train.py]
  paper_base.cifar10_ddpmpp(c, dropout=0.2)  # --arch=ddpmpp --dropout=0.2 [code: run_ecm.sh]
  c.param.update(sigma_data=0.5, sigma_min=0.002, sigma_max=80.0)  # [code: networks.py ECMPrecond]
  c.ect.update(p_mean=-1.1, p_std=2.0,  # --mean/--std defaults [code: ct_train.py]
               q=2.0, k=8.0, b=1.0, c=0.0,  # -q -k -b -c defaults [code: ct_train.py]
               stage_steps=25_000,  # --double=250 ticks x 12.8 kimg / 128 = 25k steps [code]
               initial_exponent=1,  # ratio = 1 - 1/q^(stage+1) [code: training/loss.py]
               weighting="inv_dt")  # loss / (t - r) [code: training/loss.py]
  c.optim.update(name="radam", lr=1e-4,  # --optim=RAdam --lr=0.0001 [code: run_ecm.sh]
                 b1=0.9, b2=0.999, eps=1e-8,  # betas=[0.9,0.999], eps=1e-8 [code: ct_train.py]
                 warmup_steps=0, warmup_kimg=0.0, grad_clip=0.0)  # no lr ramp-up, no clip [code]
  c.train.update(batch_size=128,  # --batch=128 [code: run_ecm.sh]
                 num_steps=400_000,  # 400k iterations: the 3.60 / 2.11 row [code: README]
                 ema_rate=0.9999, ema_warmup=False,  # --ema_beta default 0.9999 [code: ct_train.py]
                 precision="fp32",  # --fp16 default False; fp16 gave NaNs in the authors' runs [code]
                 checkpoint_every=10_000, log_every=100)
  if "200k" in tokens:
    c.train.num_steps = 200_000  # --duration=25.6 Mimg / 128 [code: run_ecm.sh]
  c.eval.t_mid = 0.821  # --mid_t default [code: ct_train.py]
  return paper_base.apply_smoke(c, tokens)
