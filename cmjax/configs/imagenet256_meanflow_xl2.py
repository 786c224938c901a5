"""MeanFlow on class-conditional ImageNet 256x256 in SD-VAE latent space, DiT-XL/2 (Geng, Deng,
Bai, Kolter, He, "Mean Flows for One-step Generative Modeling", 2025): FID 3.43 at 1-NFE
[paper abstract, checked]; 2.20 at 2-NFE [unverified: shared/methods.md, recalled]. 1-step
sampling z_0 = z_1 - u(z_1, r = 0, t = 1), decoded by the VAE (docs/latent.md).

  python launch.py --config configs/imagenet256_meanflow_xl2.py --workdir runs/in256_mf_xl2 \\
      --config.data.path=LATENTS --config.data.vae_weights=sd_vae_ft_mse.npz

Settings: the authors' JAX code's defaults (Gsunshine/meanflow configs/default.py, the MF-B/4
recipe of run_b4.yml): batch 256, Adam(W, decay 0) lr 1e-4 b2 0.95, EMA 0.9999, (t, r) from
logit-normal(-0.4, 1.0) sorted, 25% with r != t, adaptive weight p = 1, eps 0.01, guidance in the
target omega = 1, kappa = 0.5, class dropout 0.1, 240 epochs (imagenet256_base.meanflow cites each).
[unverified] per model size: the paper's appendix table gives each size its own epochs and
guidance (omega, kappa, interval); the stored sources hold only the code's B/4 defaults, used here
for every size: check the paper's table before a paper-scale run.
Deviations: the code's r = t mask takes the first 75% of each batch, cmjax draws it per example;
the code feeds t and t - r to the DiT, as cmjax's mean_flow family does.
Variants: ':smoke' (a 1-block DiT, batch 8, 2 steps; needs data.path / data.vae_weights).
"""
from cmjax.configs import imagenet256_base


def get_config(variant: str = ""):
  return imagenet256_base.meanflow("XL", variant, "imagenet256_meanflow_xl2")
