"""Shortcut models (Frans et al. 2025) on digits: the U-Net s(z_t, t, d) of the mean_flow family
(conditioned on t and the step size d), flow matching at d = 0 plus self-consistency targets on the
dyadic grid d = 1, ..., 2/128 for a quarter of each batch, from an EMA target network; sampled in 1
and 2 steps (through t = 0.5); any power-of-two number of steps n with `--mode sample
--config.sample.sigmas=1,...,1/n` (the flow times 1, 1 - 1/n, ..., 1/n).

  python launch.py --config configs/digits_shortcut.py --workdir runs/digits_shortcut
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("shortcut", variant, num_steps=1800)
  c.shortcut.update(denoise_timesteps=128, bootstrap_every=4, bootstrap_ema=True,
                    target_decay=0.99, clip=4.0)
  c.eval.t_mid = 0.5
  return c
