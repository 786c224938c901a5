"""CT from scratch on digits: N(k) from 2 to 21 over the run, mu0 = 0.9 (official divisor).

  python launch.py --config configs/digits_ct.py --workdir runs/digits_ct
Pseudo-Huber with iCT's c = 0.00054 sqrt(64) in place of LPIPS (see configs/toy2d_ct.py: the
squared L2 metric converged far more slowly there).
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("ct", variant, num_steps=1800)
  c.ct.update(s0=2, s1=20, total_steps=c.train.num_steps, mu0=0.9, mu_divisor="official",
              distance="pseudo_huber", c=0.00432)
  return c
