"""MeanFlow (Geng et al. 2025) on digits: the digits U-Net as an average-velocity model u(z, r, t)
(conditioned on t and t - r) of the mean_flow family, trained from scratch in the default run's
budget (1,800 steps of 64 images) and sampled in 1 step (z_0 = z_1 - u(z_1, 0, 1)) and 2 steps
(through t = 0.5). The (t, r) sampler and loss weighting are the authors' improved CIFAR-10
recipe (v1: t ~ LN(-0.6, 1.6), r ~ LN(-4, 1.6), 75% of r != t, norm_p 0.75). Measured once
(2026-12-02, 1 device, 2,048 samples, a heavily shared 2-core CPU: 1,466 s training): digits-FD
10.6 (1 step), 7.8 (2 steps); the floor fd_digits_data is 6.2.

  python launch.py --config configs/digits_meanflow.py --workdir runs/digits_meanflow
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("meanflow", variant, num_steps=1800)
  c.meanflow.update(tr_sampler="v1", p_mean_t=-0.6, p_std_t=1.6, p_mean_r=-4.0, p_std_r=1.6,
                    ratio_r_neq_t=0.75, norm_p=0.75, norm_eps=1e-3)
  # the time embedding sees t in [0, 1] unscaled, as the authors' nets (EDM positional embedding of
  # t and t - r): with the default 1000 t, du/dt (MeanFlow's jvp) is dominated by the fast
  # sin/cos features and training fails (toy2d: 1-step SWD 0.26, 3 of 8 modes; 1.0: 0.05, 8 of 8)
  c.model.time_scale = 1.0
  c.eval.t_mid = 0.5  # the 2-step sampler's intermediate flow time
  return c
