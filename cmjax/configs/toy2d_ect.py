"""ECT from scratch on 2-D data: q = 2, 4 stages, the first one pure denoising (a0 = 0).

  python launch.py --config configs/toy2d_ect.py --workdir runs/toy2d_ect
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("ect", variant, num_steps=3000)
  c.ect.update(q=2.0, stage_steps=750, initial_exponent=0, c=0.0, weighting="inv_dt")
  return c
