"""Grids and curricula of CD/CT/iCT/sCM against numbers computed by hand from the papers' formulas.

Every expected number below was computed once with Python's math module from the formula quoted
in the comment (float64), independently of cmjax, and pasted here.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import sampling, schedules


def test_karras_grid():
  # t_i = (eps^(1/7) + (i-1)/(N-1) (T^(1/7) - eps^(1/7)))^7, eps = 0.002, T = 80, N = 18
  g = np.asarray(schedules.karras_sigmas(18))
  np.testing.assert_allclose(g[[0, 1, 5, 10, 16, 17]],
                             [0.002, 0.007528019963, 0.2964422845, 5.315194522, 57.58598472, 80.0],
                             rtol=2e-6)
  # EDM's sampling grid is the same points, decreasing, then 0.
  np.testing.assert_allclose(sampling.edm_sigmas(18)[:-1], g[::-1], rtol=2e-6)
  assert sampling.edm_sigmas(18)[-1] == 0.0


@pytest.mark.parametrize("k,n", [(0, 2), (1, 3), (175, 3), (176, 4), (1000, 6), (10_000, 17),
                                 (100_000, 54), (400_000, 107), (799_999, 151), (800_000, 151),
                                 (900_000, 151),
                                 # float32 evaluation of the formula gives 100 and 147 here:
                                 (350_782, 100), (350_783, 101), (758_169, 147), (758_170, 148)])
def test_ct_num_scales(k, n):
  # N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1, s0 = 2, s1 = 150, K = 800k
  assert int(schedules.ct_num_scales_schedule(2, 150, 800_000)(k)) == n


@pytest.mark.parametrize("k,paper,official", [(0, 0.9, 0.81), (1, 0.9321697518, 0.9),
                                               (100_000, 0.9961053625, 0.9960320248),
                                               (800_000, 0.9986054697, 0.9985961794)])
def test_ct_target_ema_both_divisors(k, paper, official):
  # mu(k) = exp(s0 ln(mu0) / N(k)) (paper) or / (N(k) - 1) (official code), mu0 = 0.9
  for divisor, expected in (("paper", paper), ("official", official)):
    mu = schedules.ct_target_ema_schedule(2, 150, 800_000, 0.9, divisor)(k)
    assert float(mu) == pytest.approx(expected, rel=1e-6), divisor
  with pytest.raises(ValueError, match="divisor"):
    schedules.ct_target_ema_schedule(2, 150, 800_000, 0.9, "other")


@pytest.mark.parametrize("k,n", [(0, 11), (49_999, 11), (50_000, 21), (100_000, 41), (149_999, 41),
                                 (150_000, 81), (300_000, 641), (349_999, 641), (350_000, 1281),
                                 (399_999, 1281), (10_000_000, 1281)])
def test_ict_num_scales(k, n):
  # N(k) = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K / (log2 floor(s1/s0) + 1)) = 50,000
  assert int(schedules.ict_num_scales_schedule(10, 1280, 400_000)(k)) == n


def test_discrete_lognormal_probabilities():
  # p(i) ∝ erf((ln s_{i+1} + 1.1)/(2 sqrt 2)) - erf((ln s_i + 1.1)/(2 sqrt 2)) on the N = 11 grid
  expected = [0.062632993, 0.18173698, 0.24550142, 0.21349445, 0.14244606, 0.080604622,
              0.041079906, 0.019580092, 0.0089438684, 0.0039796122]
  grid = schedules.karras_sigma_at(jnp.arange(16), 11)   # 16 slots, 11 live points
  logits = schedules.discrete_lognormal_logits(grid, -1.1, 2.0, num_valid=11)
  p = np.asarray(jax.nn.softmax(logits))
  np.testing.assert_allclose(p[:10], expected, rtol=1e-5)
  assert np.all(p[10:] == 0)   # intervals beyond the live grid are never drawn


def test_pseudo_huber_c_of_ict():
  # c = 0.00054 sqrt(D): 0.02993 on CIFAR-10 (D = 3072), 0.00432 on 8x8 digits (D = 64).
  from cmjax.objectives.ict import ICTObjective
  obj = ICTObjective()
  assert obj.c_per_sqrt_dim * math.sqrt(3072) == pytest.approx(0.0299298379547902, rel=1e-12)
  assert obj.c_per_sqrt_dim * math.sqrt(64) == pytest.approx(0.00432, rel=1e-12)


def test_trigflow_time_mapping():
  # t = arctan(sigma / sd), sd = 0.5: sigma = sd -> pi/4; sigma = 80 -> 1.5645464082
  sig = jnp.array([0.002, 0.5, 1.0, 80.0])
  t = schedules.trigflow_time(jnp.log(sig), 0.5)
  np.testing.assert_allclose(np.asarray(t), [0.003999978667, math.pi / 4, 1.107148717794,
                                             1.564546408173], rtol=1e-6)
  # The sCM proposal: tau ~ N(-1, 1.4^2) -> median t = arctan(e^-1 / 0.5) = 0.6340...
  draws = schedules.trigflow_time_samples(jax.random.key(0), (20_000,), -1.0, 1.4, 0.5)
  assert float(jnp.median(draws)) == pytest.approx(math.atan(math.exp(-1.0) / 0.5), abs=0.01)
  assert float(jnp.min(draws)) > 0 and float(jnp.max(draws)) < math.pi / 2


def test_tangent_warmup():
  r = schedules.linear_warmup(10_000)
  assert [float(r(k)) for k in (0, 2_500, 10_000, 50_000)] == [0.0, 0.25, 1.0, 1.0]
  assert float(schedules.linear_warmup(0)(0)) == 1.0
