"""CD-exact on the 8-Gaussian mixture: consistency distillation whose teacher is the EXACT
denoiser of the data (cmjax.exact_gmm), so no teacher needs training. N = 18 and Heun as in
configs/toy2d_cd.py, but from random weights, and there the target network matters: with
mu = 0 (the CM paper's CIFAR-10 setting) 1-step samples covered 0 of 8 modes after 3,000 steps
(SWD 0.11, consistency error at large t 0.27); with mu = 0.95 (its ImageNet-64 setting) all 8
(SWD 0.030, error 0.086).

  python launch.py --config configs/toy2d_cd_exact.py --workdir runs/toy2d_cd_exact
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  if variant:
    raise ValueError(f"unknown variant {variant!r} of toy2d_cd_exact; known: '' (the exact "
                     f"denoiser is known for the 8-Gaussian mixture only)")
  c = toy2d_base.get_config("cd", variant, num_steps=3000, lr=1e-3)
  c.cd.update(num_scales=18, solver="heun", mu=0.95, distance="l2_squared", exact_teacher=True,
              init_from_teacher=False, teacher_workdir="")
  return c
