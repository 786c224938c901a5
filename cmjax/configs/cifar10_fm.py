"""Flow matching (rectified flow) on unconditional CIFAR-10: the diffusion model of the flow family
(z_t = (1 - t) x + t e, velocity target e - x; Lipman et al. 2023, Liu et al. 2023) trained with
the network, augmentation and training recipe of the MeanFlow CIFAR-10 script, so that it is
MeanFlow's teacher-free counterpart on equal terms (`cifar10_meanflow`), sampled by its ODE.
  python launch.py --config configs/cifar10_fm.py --workdir runs/cifar10_fm

Settings: those of cifar10_meanflow (the authors' cifar10_v1.sh: DDPM++ 128 ch, dropout 0.2, EDM
augmentation p = 0.12 with 6 augment labels, Adam 6e-4 with 9,600 warm-up steps, batch 1024,
768k steps, EMA 0.9999) [code: Gsunshine/py-meanflow 1f6d72d], with t ~ logit-normal(-0.6, 1.6),
the script's t sampler (--P_mean_t -0.6 --P_std_t 1.6). With --ratio 0 (r = t always) the
authors' MeanFlow loss is this flow-matching loss up to its adaptive weighting.
Reference numbers (not this recipe): 1-rectified flow on CIFAR-10, FID 2.58 with an adaptive RK45
solver (127 NFE) [paper Liu et al. 2023, Table 1; recall, unverified]; flow matching (OT path),
FID 6.35 (142 NFE, adaptive dopri5) [paper Lipman et al. 2023, Table 1; recall, unverified].

Deviations the lead must know:
- LOSS WEIGHT: plain mean squared velocity error (Lipman et al. Eq. 23), not MeanFlow's adaptive
  weight ||.||^2 / (||.||^2 + 1e-3)^0.75; and the network takes one time (t), where MeanFlow's
  takes (t, t - r) and, with r = t, sees t - r = 0.
- SAMPLER: eval.ode_steps = 18 Heun steps on a uniform t grid (35 NFE, EDM's budget) [unverified
  as a recipe: the papers above report adaptive solvers].
Variants: ':smoke' (tiny net, 2 steps).
"""
from cmjax.configs import cifar10_meanflow, paper_base


def get_config(variant: str = ""):
  tokens = paper_base.parse_variant(variant, "cifar10_fm")
  mf = cifar10_meanflow.get_config()
  c = paper_base.base("fm")
  c.data, c.optim, c.train = mf.data, mf.optim, mf.train  # the MeanFlow script's recipe (docstring)
  c.model = mf.model
  c.fm.update(time_sampling="logit_normal", p_mean=-0.6, p_std=1.6)  # --P_mean_t/--P_std_t [code: cifar10_v1.sh]
  c.eval.update(ode_steps=18, ode_solver="heun")  # 35 NFE [unverified as a recipe: see docstring]
  return paper_base.apply_smoke(c, tokens)
