"""sCD on digits, distilling configs/digits_trigflow.py (train it first):

  python launch.py --config configs/digits_trigflow.py --workdir runs/digits_trigflow
  python launch.py --config configs/digits_scd.py --workdir runs/digits_scd
lr 2e-4, the student starts from the teacher, t_mid = 1.1; 1,100 steps (a step costs about
1.7 ECT steps: teacher pass and JVP).
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("scd", variant, num_steps=1100, lr=2e-4)
  c.model.time_scale = 1.0
  c.scd.update(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=275, tangent_norm_c=0.1,
               adaptive_weight=True, init_from_teacher=True, teacher_workdir="runs/digits_trigflow")
  c.eval.t_mid = 1.1
  return c
