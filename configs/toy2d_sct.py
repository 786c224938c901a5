"""sCT on 2-D data (TrigFlow, JVP tangents, tangent normalisation and warmup, adaptive weight).

  python launch.py --config configs/toy2d_sct.py --workdir runs/toy2d_sct
model.time_scale = 10 (c_noise(t) = t, low-frequency positional embedding). With the
1000x scale of the CM configs the embedding's time derivative is large and noisy and sCT
collapsed to one mode in our runs; the sCM paper warns about the time embedding for the same
reason. 2-step sampling at t_mid = 1.1 (the paper's CIFAR-10 value).
"""
from configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("sct", variant, num_steps=2000)
  c.model.time_scale = 10.0
  c.sct.update(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=500, tangent_norm_c=0.1,
               adaptive_weight=True)
  c.eval.t_mid = 1.1
  return c
