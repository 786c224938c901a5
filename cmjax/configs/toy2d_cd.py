"""CD on 2-D data, distilling the EDM teacher of configs/toy2d_edm.py (train it first):

  python launch.py --config configs/toy2d_edm.py --workdir runs/toy2d_edm
  python launch.py --config configs/toy2d_cd.py --workdir runs/toy2d_cd
CM paper CIFAR-10 settings where they carry over: N = 18, Heun, mu = 0 (theta- = theta), the
student starts from the teacher. Squared L2 instead of LPIPS (2-D points); lr 2e-4 (1e-3 made
the student oscillate).
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("cd", variant, num_steps=1500, lr=2e-4)
  c.cd.update(num_scales=18, solver="heun", mu=0.0, distance="l2_squared",
              teacher_workdir="runs/toy2d_edm" + (f"_{variant}" if variant else ""),
              init_from_teacher=True)
  return c
