"""Shortcut models (Frans et al. 2025) on 2-D data: an MLP s(z_t, t, d) of the mean_flow family
(conditioned on t and the step size d; time reversed to cmjax's t = 1 noise), trained on flow
matching at d = 0 plus self-consistency targets on the dyadic grid d = 1, 1/2, ..., 2/128 for a
quarter of each batch, from an EMA target network. Sampled in 1 step (d = 1) and 2 steps (d = 1/2,
through t = 0.5). summary.json also reports shortcut_error_{small,medium,large}: the distance of
s to the exact shortcut s* of the 8 Gaussians per bucket of d.

  python launch.py --config configs/toy2d_shortcut.py --workdir runs/toy2d_shortcut
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("shortcut", variant, num_steps=2000)
  # the paper's recipe; the target network's decay is shortened from the code's 0.999 (800k
  # steps) to the 2,000 steps of this run
  c.shortcut.update(denoise_timesteps=128, bootstrap_every=4, bootstrap_ema=True,
                    target_decay=0.99, clip=4.0)
  c.eval.t_mid = 0.5  # the 2-step sampler's intermediate flow time (two shortcuts of d = 1/2)
  return c
