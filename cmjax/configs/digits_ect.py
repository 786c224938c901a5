"""ECT from scratch on the embedded 8x8 digits: the default run (<= 15 min on a 2-core CPU).

The optimiser is Muon (`optim.name='muon'`, lr 1e-3, AdamW on vectors): at this budget it beat
the digits configs' RAdam on every seed of the ablation study (docs/digits_ablation.md,
sweeps/digits_ect_full.json).

  python launch.py --config configs/digits_ect.py --workdir runs/digits_ect
Variants: ':smoke' (tiny model, a few steps, RAdam; for tests).
"""
from cmjax.configs import digits_base


def get_config(variant: str = ""):
  c = digits_base.get_config("ect", variant, num_steps=1800)
  # From scratch: stage 0 is pure denoising (a0 = 0), then decay 1/2^stage every 300 steps.
  c.ect.update(q=2.0, stage_steps=2 if variant == "smoke" else 300, initial_exponent=0)
  if variant != "smoke":  # docs/digits_ablation.md: 1-step FD 12.8 against RAdam's 22.9 (3 seeds)
    c.optim.name = "muon"  # ':smoke' (tests of files, faults, modes) keeps RAdam: its step compiles
    # in about 8 s instead of 12.5 at the tests' XLA settings; Muon's step is tested on its own
    # (tests/test_optimizers.py)
  return c
