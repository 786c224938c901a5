"""Shared base of the 2-D toy configs (configs/toy2d_<method>.py): an MLP consistency model on a
mixture of 8 Gaussians (variant ':checkerboard' for the harder shape), exact metrics.

Each run takes well under a minute on a 2-core CPU:
  python launch.py --config configs/toy2d_ect.py --workdir runs/toy2d_ect
summary.json then holds swd_1step/2step (sliced Wasserstein-1 to exact samples),
modes_covered_1step/2step (fraction of the 8 modes) and near_modes (share of samples near a
mode); diffusion teachers (edm, trigflow) report the same for their ODE sampler ('ode').
"""
from cmjax import config_base
from cmjax.models import model_config
from cmjax.data.toy2d import toy2d_sigma_data

DATA = {"": "gmm8", "checkerboard": "checkerboard"}


def get_config(method: str, variant: str = "", num_steps: int = 2000, lr: float = 1e-3):
  """The toy config of `method`; variant '' (gmm8) or 'checkerboard'."""
  if variant not in DATA:
    raise ValueError(f"unknown variant {variant!r} of toy2d_{method}; known: '', 'checkerboard'")
  c = config_base.get_config()
  c.method = method
  c.data.name = "toy2d_" + DATA[variant]
  c.model = model_config("mlp", hidden=128, depth=2, dropout=0.0, time_scale=1000.0)
  c.param.sigma_data = round(toy2d_sigma_data(DATA[variant]), 4)  # sd of the data, not 0.5
  c.optim.update(name="radam", lr=lr, warmup_steps=100, grad_clip=1.0)
  c.train.update(batch_size=256, num_steps=num_steps, ema_rate=0.99, ema_warmup=True,
                 log_every=100, checkpoint_every=num_steps, keep_checkpoints=1, sample_every=0)
  c.eval.update(num_samples=4096, batch_size=1024, ode_steps=18)
  return c
