"""Class-conditional MeanFlow on digits with classifier-free guidance folded into the target
(Geng et al. 2025, Sec. 4.2; the authors' JAX ImageNet code Gsunshine/meanflow configs/default.py:
class_dropout_prob 0.1, omega 1.0, kappa 0.5, t in [0, 1]): `digits_meanflow` with
model.label_dim = 10 (one class per digit; the null class 10 is a zero one-hot), the guided
velocity v_g = omega v + kappa u(z, t, t | y) + (1 - omega - kappa) u(z, t, t | null) as the
jvp tangent and in the target, and sampling with the digits' class labels (1 step, no extra
guidance pass at sampling: the effective guidance scale omega / (1 - kappa) = 2 is in the net).

  python launch.py --config configs/digits_meanflow_cfg.py --workdir runs/digits_meanflow_cfg
"""
from cmjax.configs import digits_meanflow


def get_config(variant: str = ""):
  c = digits_meanflow.get_config(variant)
  c.model.label_dim = 10
  c.meanflow.update(num_classes=10, cfg_omega=1.0, cfg_kappa=0.5, cfg_t_start=0.0, cfg_t_end=1.0,
                    class_dropout_prob=0.1)
  return c
