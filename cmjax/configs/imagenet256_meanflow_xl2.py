"""MeanFlow on class-conditional ImageNet 256x256 in SD-VAE latent space, DiT-XL/2 (Geng, Deng,
Bai, Kolter, He, "Mean Flows for One-step Generative Modeling", 2025): FID 3.43 at 1-NFE
[paper abstract, checked]; 2.20 at 2-NFE [unverified: shared/methods.md, recalled]. 1-step
sampling z_0 = z_1 - u(z_1, r = 0, t = 1), decoded by the VAE (docs/latent.md).

  python launch.py --config configs/imagenet256_meanflow_xl2.py --workdir runs/in256_mf_xl2 \\
      --config.data.path=LATENTS --config.data.vae_weights=sd_vae_ft_mse.npz

Settings, their sources and the deviations: `imagenet256_base.meanflow` (shared by every size).
Variants: ':smoke' (a 1-block DiT, batch 8, 2 steps; needs data.path / data.vae_weights).
"""
from cmjax.configs import imagenet256_base


def get_config(variant: str = ""):
  return imagenet256_base.meanflow("XL", variant, "imagenet256_meanflow_xl2")
