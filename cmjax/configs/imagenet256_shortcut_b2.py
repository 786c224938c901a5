"""Shortcut models on class-conditional ImageNet 256x256 in SD-VAE latent space, DiT-B/2 (Frans,
Hafner, Levine, Abbeel, "One Step Diffusion via Shortcut Models", ICLR 2025): FID 40.3 at 1 step,
28.3 at 4 steps, 15.5 at 128 steps [code: kvfrans/shortcut-models README "Sanity Checking",
DiT-B; the paper's table is not in the stored sources: unverified there]. Sampled decoded by the
VAE (docs/latent.md); any power-of-two step count with --mode sample --config.sample.sigmas.

  python launch.py --config configs/imagenet256_shortcut_b2.py --workdir runs/in256_sc_b2 \\
      --config.data.path=LATENTS --config.data.vae_weights=sd_vae_ft_ema.npz

Settings: the README's ImageNet-256 DiT-B command (--model.hidden_size 768 --model.patch_size 2
--model.depth 12 --model.num_heads 12 --model.mlp_ratio 4 --model.cfg_scale 1.5
--model.class_dropout_prob 0.1 --model.bootstrap_cfg 1 --batch_size 256 --max_steps 810_000
--model.train_type shortcut) over train.py's defaults (AdamW lr 1e-4, b2 0.999, weight decay 0.1,
no warm-up, denoise_timesteps 128, bootstrap_every 8, bootstrap_ema 1, target_update_rate 0.999);
imagenet256_base.shortcut cites each.
Deviations the lead must know:
- bootstrap_cfg 1 (guided self-consistency targets) and sampling with cfg_scale 1.5 are NOT
  implemented (cmjax's shortcut objective has no guidance; objectives/shortcut.py): expect a
  worse FID than the README's until they are.
- Data: the code centre-crops with tf.image.resize_with_crop_or_pad and resizes with antialiasing
  (utils/datasets.py), and encodes a posterior sample on the fly with the SD VAE
  (utils/stable_vae.py; which SD VAE is [unverified]); cmjax uses ADM's crop and stored moments.
- 'use_ema': 0: the code samples the online parameters; eval.params and sample.params are 'raw'.
Variants: ':smoke' (a 1-block DiT, batch 8, 2 steps; needs data.path / data.vae_weights).
"""
from cmjax.configs import imagenet256_base


def get_config(variant: str = ""):
  return imagenet256_base.shortcut("B", variant, "imagenet256_shortcut_b2")
