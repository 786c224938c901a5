"""Schedules and distances against numbers computed by hand from the papers' formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import distances, schedules


@pytest.mark.parametrize("step,expected", [
    (0, 0.5), (99, 0.5), (100, 0.25), (199, 0.25), (250, 0.125), (1000, 2.0**-11)])
def test_ect_decay_schedule(step, expected):
  # 1 / q^(floor(step/d) + 1), q = 2, d = 100
  assert float(schedules.ect_decay_schedule(2.0, 100)(step)) == pytest.approx(expected, rel=1e-7)


def test_ect_mapping_hand_values():
  # n(t) = 1 + 8 sigmoid(-t); r = max(0, t (1 - n(t) decay))
  # t = 1:  sigmoid(-1) = 0.2689414214, n = 3.1515313709
  # t = 10: sigmoid(-10) = 4.5397868702e-5, n = 1.0003631829
  sched = schedules.ect_decay_schedule(2.0, 100)
  t = jnp.array([1.0, 10.0])
  r0 = schedules.ect_mapping(t, sched(0))      # decay 1/2
  np.testing.assert_allclose(np.asarray(r0), [0.0, 10 * (1 - 0.5 * 1.0003631829)], rtol=1e-6)
  r2 = schedules.ect_mapping(t, sched(250))    # decay 1/8
  np.testing.assert_allclose(np.asarray(r2), [1 - 3.1515313709 / 8, 10 * (1 - 1.0003631829 / 8)],
                             rtol=1e-6)
  # q = 4, stage 1 (decay 1/16), k = 4, b = 2 at t = 0.5: sigmoid(-1) again, n = 2.0757656856
  r = schedules.ect_mapping(jnp.float32(0.5), schedules.ect_decay_schedule(4.0, 10)(15), k=4.0, b=2.0)
  assert float(r) == pytest.approx(0.5 * (1 - 2.0757656856 / 16), rel=1e-6)


def test_ect_mapping_properties():
  t = jnp.exp(jnp.linspace(-6, 4.4, 200))
  for step in (0, 500, 5000):
    r = schedules.ect_mapping(t, schedules.ect_decay_schedule(2.0, 500)(step))
    assert bool(jnp.all(r >= 0)) and bool(jnp.all(r < t))
  r_late = schedules.ect_mapping(t, schedules.ect_decay_schedule(2.0, 500)(10_000))
  assert float(jnp.max(1 - r_late[t > 1] / t[t > 1])) < 1e-3  # late stages: r -> t


def test_lognormal_moments():
  t = schedules.lognormal_noise_levels(jax.random.key(0), (200_000,), -1.1, 2.0)
  lt = np.log(np.asarray(t))
  assert abs(lt.mean() + 1.1) < 0.02 and abs(lt.std() - 2.0) < 0.02


def test_warmup_lr():
  s = schedules.warmup_constant_lr(1e-3, 100)
  assert float(s(0)) == 0.0 and float(s(50)) == pytest.approx(5e-4) and float(s(500)) == pytest.approx(1e-3)


def test_pseudo_huber_whole_vector_not_per_pixel():
  a = jnp.ones((2, 4, 4, 1)) * jnp.array([1.0, 2.0])[:, None, None, None]
  b = jnp.zeros_like(a)
  c = 0.5
  # whole vector: sqrt(16 * v^2 + c^2) - c ; per pixel would be 16 * (sqrt(v^2 + c^2) - c)
  expected = [np.sqrt(16 * 1 + 0.25) - 0.5, np.sqrt(16 * 4 + 0.25) - 0.5]
  np.testing.assert_allclose(np.asarray(distances.pseudo_huber(a, b, c)), expected, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(distances.pseudo_huber(a, b, 0.0)), [4.0, 8.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(distances.l2(a, b)), [4.0, 8.0], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(distances.l1(a, b)), [16.0, 32.0], rtol=1e-6)


def test_l2_gradient_finite_at_zero_and_nan_propagates():
  g = jax.grad(lambda a: distances.l2(a, jnp.zeros_like(a)).sum())(jnp.zeros((1, 3)))
  assert bool(jnp.all(jnp.isfinite(g)))
  bad = jnp.array([[jnp.nan, 1.0, 1.0]])
  assert bool(jnp.isnan(distances.l2(bad, jnp.zeros_like(bad))[0]))
  assert bool(jnp.isnan(distances.pseudo_huber(bad, jnp.zeros_like(bad), 0.1)[0]))


def test_ect_initial_exponent_zero_starts_with_denoising():
  sched = schedules.ect_decay_schedule(2.0, 100, initial_exponent=0)
  assert float(sched(0)) == 1.0 and float(sched(99)) == 1.0 and float(sched(100)) == 0.5
  t = jnp.exp(jnp.linspace(-6, 4.4, 50))
  assert float(jnp.max(schedules.ect_mapping(t, sched(50)))) == 0.0  # r = 0: target = x


def test_ema_decay_schedule():
  const = schedules.ema_decay_schedule(0.999)
  assert float(const(0)) == pytest.approx(0.999) and float(const(10**6)) == pytest.approx(0.999)
  warm = schedules.ema_decay_schedule(0.999, warmup=True)
  # min(0.999, (1 + s) / (10 + s)): 0.1 at s = 0, 0.5 at s = 8, capped at 0.999 from s = 8991.
  assert float(warm(0)) == pytest.approx(0.1) and float(warm(8)) == pytest.approx(0.5)
  assert float(warm(100_000)) == pytest.approx(0.999)


def test_cosine_lr_decay_after_warmup_reaches_zero_at_the_last_step():
  from cmjax.config_base import get_config
  from cmjax.schedules import lr_schedule, resolve_durations

  s = lr_schedule(1e-3, 10, "cosine", 110)
  np.testing.assert_allclose([float(s(i)) for i in (0, 5, 10, 60, 110, 200)],
                             [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
  np.testing.assert_allclose(float(lr_schedule(1e-3, 10, "constant", 110)(110)), 1e-3, rtol=1e-6)
  c = get_config()
  c.optim.update(lr=2e-3, warmup_steps=0, lr_decay="cosine")
  c.train.num_steps = 40
  d = resolve_durations(c)
  np.testing.assert_allclose([float(d.lr_schedule(0)), float(d.lr_schedule(20))], [2e-3, 1e-3], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown optim.lr_decay 'step'"):
    lr_schedule(1e-3, 0, "step", 10)


def test_the_builders_optimiser_follows_the_decayed_schedule():
  import jax.numpy as jnp
  import optax
  from cmjax.config_base import get_config
  from cmjax.schedules import resolve_durations
  from cmjax.train_state import build_optimizer

  c = get_config()
  c.optim.update(name="adam", lr=1e-2, warmup_steps=0, lr_decay="cosine")
  c.train.num_steps = 4
  d = resolve_durations(c)
  opt = build_optimizer(c.optim, lr=d.lr_schedule)
  p = {"w": jnp.zeros(3)}
  st = opt.init(p)
  sizes = []
  for _ in range(5):
    u, st = opt.update({"w": jnp.ones(3)}, st, p)
    sizes.append(float(jnp.abs(u["w"]).max()))
  # Adam's first steps move by ~lr: lr(0) = 1e-2, lr(2) = 5e-3, lr(4) = 0.
  np.testing.assert_allclose([sizes[0], sizes[2], sizes[4]], [1e-2, 5e-3, 0.0], rtol=1e-3, atol=1e-8)
