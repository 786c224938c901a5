"""CD-exact on the 8-Gaussian mixture: consistency distillation whose teacher is the EXACT
denoiser of the data (cmjax.exact_gmm), so no teacher needs training. Same settings as
configs/toy2d_cd.py otherwise (N = 18, Heun, mu = 0), from random weights.

  python launch.py --config configs/toy2d_cd_exact.py --workdir runs/toy2d_cd_exact
"""
from configs import toy2d_base


def get_config(variant: str = ""):
  if variant:
    raise ValueError(f"unknown variant {variant!r} of toy2d_cd_exact; known: '' (the exact "
                     f"denoiser is known for the 8-Gaussian mixture only)")
  c = toy2d_base.get_config("cd", variant, num_steps=1500, lr=1e-3)
  c.cd.update(num_scales=18, solver="heun", mu=0.0, distance="l2_squared", exact_teacher=True,
              init_from_teacher=False, teacher_workdir="")
  return c
