"""EDM diffusion model on digits: the teacher of configs/digits_cd.py (Heun, 18 steps = 35 NFE).

  python launch.py --config configs/digits_edm.py --workdir runs/digits_edm
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("edm", variant, num_steps=1800)
  c.edm.update(p_mean=-1.2, p_std=1.2)
  return c
