"""iCT on 2-D data: pseudo-Huber (c = 0.00054 sqrt(2)), lambda = 1/(s_{i+1} - s_i), discrete
lognormal index sampling, N(k) doubling from 10 to 160 (s1 = 1280 on CIFAR-10) over the run.

  python launch.py --config configs/toy2d_ict.py --workdir runs/toy2d_ict
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("ict", variant, num_steps=3000)
  c.ict.update(s0=10, s1=160, total_steps=3000, p_mean=-1.1, p_std=2.0, c_per_sqrt_dim=0.00054)
  return c
