"""TrigFlow diffusion model on 2-D data: the teacher of configs/toy2d_scd.py (18 DDIM steps).

  python launch.py --config configs/toy2d_trigflow.py --workdir runs/toy2d_trigflow
model.time_scale = 1: c_noise(t) = t as in the sCM paper (see toy2d_sct.py).
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("trigflow", variant, num_steps=1500)
  c.model.time_scale = 1.0
  c.trigflow.update(p_mean=-1.0, p_std=1.4, adaptive_weight=True)
  return c
