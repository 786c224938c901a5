"""CT on 2-D data: the N(k) / mu(k) curriculum of the CM paper, shortened.

  python launch.py --config configs/toy2d_ct.py --workdir runs/toy2d_ct
s0 = 2, mu0 = 0.9 and the official mu(k) divisor as on CIFAR-10; s1 = 12 instead of 150 and
K = the whole run (CT needs many steps per grid point; 8,000 steps cannot carry 150).
Distance: pseudo-Huber with c = 0.001 (nearly the L2 norm) in place of the paper's LPIPS, which
needs images. With the squared L2 metric 1-step CT covered 6 of the 8 modes after 8,000 steps
in our runs; with this one all 8 (SWD 0.09), but only 5-8 of 8 after 5,000 steps depending on
the seed: CT is the slowest method here, as in the paper.
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("ct", variant, num_steps=8000)
  c.ct.update(s0=2, s1=12, total_steps=8000, mu0=0.9, mu_divisor="official",
              distance="pseudo_huber", c=0.001)
  return c
