"""Shared base of the digits configs (configs/digits_<method>.py): the embedded 8x8 digits, a
32-channel U-Net, batch 64, RAdam 1e-3 with warmup and clipping, EMA 0.999 with warmup — every
method trained from scratch within the CPU budget of the default run (configs/digits_ect.py).

Variants: ':smoke' (a tiny model and a few steps; for tests).
"""
from cmjax import config_base


def get_config(method: str, variant: str = "", num_steps: int = 1800, lr: float = 1e-3):
  """The digits config of `method` with `num_steps` steps of 64 images at learning rate `lr`."""
  c = config_base.get_config()
  c.method = method
  c.model.update(channels=32, channel_mult=(1, 2), num_res_blocks=2, dropout=0.1)
  c.train.update(batch_size=64, num_steps=num_steps, ema_rate=0.999, ema_warmup=True, log_every=50,
                 checkpoint_every=300, sample_every=600)
  c.optim.update(name="radam", lr=lr, warmup_steps=100, grad_clip=1.0)
  if variant == "smoke":
    c.model.update(channels=8, num_res_blocks=1, groups=4)
    c.train.update(batch_size=16, num_steps=4, checkpoint_every=2, log_every=1, sample_every=0)
    c.eval.update(num_samples=1024, batch_size=256, grid_rows=4, ode_steps=4)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of digits_{method}; known: 'smoke'")
  return c
