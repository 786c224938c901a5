"""EDM diffusion model on 2-D data: the teacher of configs/toy2d_cd.py (Heun, 18 steps).

  python launch.py --config configs/toy2d_edm.py --workdir runs/toy2d_edm
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("edm", variant, num_steps=1500)
  c.edm.update(p_mean=-1.2, p_std=1.2)
  return c
