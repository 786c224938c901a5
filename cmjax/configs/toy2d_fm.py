"""Flow matching (rectified flow) on 2-D data: a diffusion model of the flow family, sampled by its
ODE (Heun, 18 steps); logit-normal t (SD3's (0, 1)).

  python launch.py --config configs/toy2d_fm.py --workdir runs/toy2d_fm
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("fm", variant, num_steps=1500)
  c.fm.update(time_sampling="logit_normal", p_mean=0.0, p_std=1.0)
  return c
