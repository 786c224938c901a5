"""sCD on 2-D data, distilling configs/toy2d_trigflow.py (train it first):

  python launch.py --config configs/toy2d_trigflow.py --workdir runs/toy2d_trigflow
  python launch.py --config configs/toy2d_scd.py --workdir runs/toy2d_scd
lr 2e-4 (as for CD), the student starts from the teacher, t_mid = 1.1.
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("scd", variant, num_steps=1500, lr=2e-4)
  c.model.time_scale = 1.0
  c.scd.update(p_mean=-1.0, p_std=1.4, tangent_warmup_steps=375, tangent_norm_c=0.1,
               adaptive_weight=True, init_from_teacher=True,
               teacher_workdir="runs/toy2d_trigflow" + (f"_{variant}" if variant else ""))
  c.eval.t_mid = 1.1
  return c
