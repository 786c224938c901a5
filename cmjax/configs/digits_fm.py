"""Flow matching (rectified flow) on digits: a diffusion model of the flow family, sampled by its
ODE (Heun, 18 steps = 36 NFE); logit-normal t (SD3's (0, 1)).

  python launch.py --config configs/digits_fm.py --workdir runs/digits_fm
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("fm", variant, num_steps=1800)
  c.fm.update(time_sampling="logit_normal", p_mean=0.0, p_std=1.0)
  return c
