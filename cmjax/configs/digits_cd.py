"""CD on digits, distilling the EDM teacher of configs/digits_edm.py (train it first):

  python launch.py --config configs/digits_edm.py --workdir runs/digits_edm
  python launch.py --config configs/digits_cd.py --workdir runs/digits_cd
CM paper CIFAR-10 settings: N = 18, Heun, mu = 0, the student starts from the teacher. Squared
L2 instead of LPIPS (VGG16 needs far larger images than 8x8); lr 2e-4. 1,400 steps: a CD step
costs about 1.3 ECT steps (two teacher passes).
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("cd", variant, num_steps=1400, lr=2e-4)
  c.cd.update(num_scales=18, solver="heun", mu=0.0, distance="l2_squared",
              teacher_workdir="runs/digits_edm", init_from_teacher=True)
  return c
