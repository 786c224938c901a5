"""ECT from scratch on the embedded 8x8 digits: the default run (<= 15 min on a 2-core CPU).

  python launch.py --config configs/digits_ect.py --workdir runs/digits_ect
Variants: ':smoke' (tiny model, a few steps; for tests).
"""
from cmjax import config_base


def get_config(variant: str = ""):
  c = config_base.get_config()
  c.method = "ect"
  c.model.update(channels=32, channel_mult=(1, 2), num_res_blocks=2, dropout=0.1)
  c.train.update(batch_size=64, num_steps=1800, ema_rate=0.999, ema_warmup=True, log_every=50,
                 checkpoint_every=300, sample_every=600)
  # From scratch: stage 0 is pure denoising (a0 = 0), then decay 1/2^stage every 300 steps.
  c.ect.update(q=2.0, stage_steps=300, initial_exponent=0)
  c.optim.update(name="radam", lr=1e-3, warmup_steps=100, grad_clip=1.0)
  if variant == "smoke":
    c.model.update(channels=8, num_res_blocks=1, groups=4)
    c.train.update(batch_size=16, num_steps=4, checkpoint_every=2, log_every=1, sample_every=0)
    c.ect.update(stage_steps=2)
    c.eval.update(num_samples=1024, batch_size=256, grid_rows=4)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of digits_ect; known: 'smoke'")
  return c
