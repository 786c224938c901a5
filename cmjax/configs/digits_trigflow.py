"""TrigFlow diffusion model on digits: the teacher of configs/digits_scd.py (18 DDIM steps).

  python launch.py --config configs/digits_trigflow.py --workdir runs/digits_trigflow
model.time_scale = 1 (c_noise(t) = t as in the sCM paper; see configs/toy2d_sct.py).
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("trigflow", variant, num_steps=1800)
  c.model.time_scale = 1.0
  c.trigflow.update(p_mean=-1.0, p_std=1.4, adaptive_weight=True)
  return c
