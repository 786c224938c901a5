"""sCT on 2-D data (TrigFlow, JVP tangents, tangent normalisation and warmup, adaptive weight).

  python launch.py --config configs/toy2d_sct.py --workdir runs/toy2d_sct
model.time_scale = 1: the positional embedding sees c_noise(t) = t itself, as in the sCM paper.
The time embedding decides whether sCT trains (the JVP differentiates it). In our 2,000-step
runs of this MLP (1-step share of samples near a mode): time_scale 1: 0.83; 10: 0.32 (a blurred
ring); 1000 (the scale our CM configs give ln(t)/4): collapse to one mode. 2-step sampling at
t_mid = 1.1 (the paper's CIFAR-10 value).
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("sct", variant, num_steps=2000)
  c.model.time_scale = 1.0
  c.sct.update(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=500, tangent_norm_c=0.1,
               adaptive_weight=True)
  c.eval.t_mid = 1.1
  return c
