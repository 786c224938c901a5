"""MeanFlow (Geng et al. 2025) on 2-D data: an MLP average-velocity model u(z, r, t) (conditioned on
t and t - r) of the mean_flow family, sampled in 1 step (z_0 = z_1 - u(z_1, 0, 1)) and 2 steps
(through t = 0.5). summary.json also reports meanflow_error_{small,medium,large}: the distance
of u to the exact average velocity u* of the 8 Gaussians per bucket of t - r.

  python launch.py --config configs/toy2d_meanflow.py --workdir runs/toy2d_meanflow
"""
from cmjax.configs import toy2d_base


def get_config(variant: str = ""):
  c = toy2d_base.get_config("meanflow", variant, num_steps=2000)
  c.meanflow.update(tr_sampler="v1", p_mean_t=-0.6, p_std_t=1.6, p_mean_r=-4.0, p_std_r=1.6,
                    ratio_r_neq_t=0.75, norm_p=0.75, norm_eps=1e-3)
  # the time embedding sees t in [0, 1] unscaled, as the authors' nets (EDM positional embedding of
  # t and t - r): with the default 1000 t, du/dt (MeanFlow's jvp) is dominated by the fast
  # sin/cos features and training fails (toy2d: 1-step SWD 0.26, 3 of 8 modes; 1.0: 0.05, 8 of 8)
  c.model.time_scale = 1.0
  c.eval.t_mid = 0.5  # the 2-step sampler's intermediate flow time
  return c
