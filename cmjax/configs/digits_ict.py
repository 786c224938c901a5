"""iCT from scratch on digits: N(k) doubling 10 -> 160 over the run, discrete lognormal index,
pseudo-Huber c = 0.00054 sqrt(64), lambda = 1/(s_{i+1} - s_i), stop-gradient teacher.

  python launch.py --config configs/digits_ict.py --workdir runs/digits_ict
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("ict", variant, num_steps=1800)
  c.ict.update(s0=10, s1=160, total_steps=c.train.num_steps, p_mean=-1.1, p_std=2.0)
  return c
