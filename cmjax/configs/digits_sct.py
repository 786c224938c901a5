"""sCT from scratch on digits (TrigFlow, JVP tangents, normalisation, warmup, adaptive weight).

  python launch.py --config configs/digits_sct.py --workdir runs/digits_sct
1,200 steps: a step costs about 1.5 ECT steps (the JVP). model.time_scale = 1, i.e. c_noise(t) = t
as in the paper (see configs/toy2d_sct.py); t_mid = 1.1 as in the paper.
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("sct", variant, num_steps=1200)
  c.model.time_scale = 1.0
  c.sct.update(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=300, tangent_norm_c=0.1,
               adaptive_weight=True)
  c.eval.t_mid = 1.1
  return c
