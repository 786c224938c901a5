"""Every objective with a transparent model (f = a x, F = a x/sd + b t, D = b x), so each term
can be recomputed by hand: noise levels on the right grid, shared noise, the teacher's ODE step,
the target network, weights, the sCM tangent and the direction of the gradient."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax import schedules
from cmjax.objectives import OBJECTIVES
from cmjax.objectives.cd import CDObjective
from cmjax.objectives.ct import CTObjective
from cmjax.objectives.edm import EDMObjective
from cmjax.objectives.ict import ICTObjective
from cmjax.objectives.scm import SCMObjective
from cmjax.objectives.trigflow import TrigFlowObjective
from cmjax.train_step import example_keys

B = 256


def _data(shape=(4, 4, 1)):
  return jax.random.uniform(jax.random.key(0), (B,) + shape, minval=-1, maxval=1)


def _recording(calls):
  def f(params, x, t, dropout_keys=None):
    calls.append((params, np.asarray(x), np.asarray(t), dropout_keys))
    return params["a"] * x
  return f


def _bc(v):
  return np.asarray(v)[:, None, None, None]


def test_edm_loss_and_weight():
  x, calls = _data(), []
  loss, m = EDMObjective()(_recording(calls), {"a": 0.7}, x, example_keys(jax.random.key(1), 0, B), 0)
  (_, x_in, s, _), = calls
  w = (s**2 + 0.25) / (s * 0.5) ** 2
  np.testing.assert_allclose(np.asarray(loss), w * np.sum((0.7 * x_in - x) ** 2, axis=(1, 2, 3)), rtol=1e-5)
  assert abs(np.median(np.log(s)) + 1.2) < 0.2 and abs(np.std(np.log(s)) - 1.2) < 0.15


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_cd_teacher_step_grid_and_target(solver):
  x, calls, t_calls = _data(), [], []

  def teacher(p, v, s):
    t_calls.append(np.asarray(s))
    return p["b"] * v

  obj = CDObjective(num_scales=18, solver=solver, teacher_fn=teacher)
  extra = {"teacher": {"b": 0.6}, "target": {"a": 0.9}}
  loss, _ = obj(_recording(calls), {"a": 1.1}, x, example_keys(jax.random.key(1), 3, B), 3, extra)
  (p_s, x_hi, t_hi, k_s), (p_t, x_lo, t_lo, k_t) = calls
  assert p_s["a"] == 1.1 and p_t["a"] == 0.9            # student online, target theta-
  np.testing.assert_array_equal(jax.random.key_data(k_s), jax.random.key_data(k_t))
  grid = np.asarray(schedules.karras_sigmas(18))
  idx = np.searchsorted(grid, t_hi, side="left")
  np.testing.assert_allclose(grid[idx], t_hi, rtol=1e-6)
  np.testing.assert_allclose(grid[idx - 1], t_lo, rtol=1e-6)   # adjacent points, t_n < t_{n+1}
  assert set(np.unique(idx)) == set(range(1, 18))              # every n in 1..N-1 is drawn
  # The teacher's step by hand: dx/ds = (x - D(x; s)) / s = (1 - b) x / s.
  d1 = (1 - 0.6) * np.asarray(x_hi) / _bc(t_hi)
  x_e = x_hi + _bc(t_lo - t_hi) * d1
  expect = x_e if solver == "euler" else x_hi + _bc(t_lo - t_hi) * 0.5 * (d1 + (1 - 0.6) * x_e / _bc(t_lo))
  np.testing.assert_allclose(x_lo, expect, rtol=1e-5, atol=1e-6)
  assert len(t_calls) == (2 if solver == "heun" else 1)
  np.testing.assert_allclose(np.asarray(loss), np.sum((1.1 * x_hi - 0.9 * x_lo) ** 2, axis=(1, 2, 3)),
                             rtol=1e-5)


def test_cd_without_teacher_is_an_error():
  with pytest.raises(ValueError, match="teacher"):
    CDObjective()(_recording([]), {"a": 1.0}, _data(), example_keys(jax.random.key(1), 0, B), 0,
                  {"target": {"a": 1.0}})


def test_ct_shared_noise_curriculum_grid_and_target():
  x, calls = _data(), []
  obj = CTObjective(s0=2, s1=150, total_steps=800_000)
  step = 1000                                              # N(1000) = 6
  loss, m = obj(_recording(calls), {"a": 1.2}, x, example_keys(jax.random.key(1), step, B), step,
                {"target": {"a": 0.8}})
  (p_s, x_hi, t_hi, _), (p_t, x_lo, t_lo, _) = calls
  assert p_t["a"] == 0.8 and float(m["num_scales"][0]) == 6
  grid = np.asarray(schedules.karras_sigmas(6))
  idx = np.searchsorted(grid, t_hi * (1 - 1e-6))
  np.testing.assert_allclose(grid[idx - 1], t_lo, rtol=1e-5)
  np.testing.assert_allclose((x_hi - x) / _bc(t_hi), (x_lo - x) / _bc(t_lo), rtol=1e-3, atol=1e-3)
  np.testing.assert_allclose(np.asarray(loss), np.sum((1.2 * x_hi - 0.8 * x_lo) ** 2, axis=(1, 2, 3)),
                             rtol=1e-5)
  assert obj.target_ema(0) == pytest.approx(0.81) and obj.target_ema(1) == pytest.approx(0.9)


def test_ict_weight_huber_and_index_distribution():
  x, calls = _data((8, 8, 1)), []
  obj = ICTObjective()
  keys = example_keys(jax.random.key(1), 0, B)
  loss, m = obj(_recording(calls), {"a": 1.1}, x, keys, 0)
  (p_s, x_hi, t_hi, _), (p_t, x_lo, t_lo, _) = calls
  c = 0.00054 * 8.0
  delta = 1.1 * x_hi - 1.1 * x_lo
  expect = (np.sqrt(np.sum(delta**2, axis=(1, 2, 3)) + c**2) - c) / (t_hi - t_lo)
  np.testing.assert_allclose(np.asarray(loss), expect, rtol=1e-4)
  # Gradient only through the student pass: d/da = lambda (x_hi . delta) / sqrt(|delta|^2 + c^2).
  g = jax.grad(lambda p: jnp.sum(obj(lambda q, v, t, k: q["a"] * v, p, x, keys, 0)[0]))({"a": 1.1})
  hand = np.sum(np.sum(x_hi * delta, axis=(1, 2, 3)) / np.sqrt(np.sum(delta**2, axis=(1, 2, 3)) + c**2)
                / (t_hi - t_lo))
  assert float(g["a"]) == pytest.approx(hand, rel=1e-3)
  # Index frequencies follow the discrete lognormal on the N = 11 grid (4,096 draws).
  big = 4096
  keys = example_keys(jax.random.key(2), 0, big)
  i_keys = jax.vmap(lambda k: jax.random.split(k, 3)[0])(keys)
  grid = schedules.karras_sigma_at(jnp.arange(1281), 11)
  logits = schedules.discrete_lognormal_logits(grid, -1.1, 2.0, 11)
  i = np.asarray(jax.vmap(lambda k: jax.random.categorical(k, logits))(i_keys))
  freq = np.bincount(i, minlength=10)[:10] / big
  p = np.asarray(jax.nn.softmax(logits))[:10]
  assert np.max(np.abs(freq - p)) < 4 * np.sqrt(p.max() / big)


def _linear_F(calls=None):
  """F(x_t/sd, t) = a x_t/sd + b t (both scalars): dF/dt = a (dx_t/dt)/sd + b by hand."""
  def F(params, x, t, dropout_keys=None):
    if calls is not None and not isinstance(x, jax.core.Tracer):  # the jvp pass is traced
      calls.append((np.asarray(x), np.asarray(t)))
    return params["a"] * x / 0.5 + params["b"] * t.reshape((-1,) + (1,) * (x.ndim - 1))
  return F


@pytest.mark.parametrize("distill", [False, True])
def test_scm_tangent_loss_and_gradient_direction(distill):
  sd, step, warm = 0.5, 250, 1000
  x, calls = _data(), []
  teacher = lambda p, v, t: p["c"] * v / sd
  obj = SCMObjective(distill=distill, tangent_warmup_steps=warm, teacher_fn=teacher)
  params = {"a": 0.3, "b": -0.2}
  aux = obj.init_aux(jax.random.key(5))
  keys = example_keys(jax.random.key(1), step, B)
  extra = {"aux": aux, "teacher": {"c": 0.4}}
  loss, m = obj(_linear_F(calls), params, x, keys, step, extra)
  x_t, t = calls[0]
  cos, sin = _bc(np.cos(t)), _bc(np.sin(t))
  z = (x_t - cos * np.asarray(x)) / sin
  dxdt = 0.4 * x_t / sd * sd if distill else cos * z - sin * np.asarray(x)
  F = 0.3 * x_t / sd - 0.2 * _bc(t)
  dF = 0.3 * dxdt / sd - 0.2
  r = step / warm
  g = -cos**2 * (sd * F - dxdt) - r * cos * sin * (x_t + sd * dF)
  g = g / (_bc(np.sqrt(np.sum(g**2, axis=(1, 2, 3)))) + 0.1)
  # w(t) = 0 at init: loss = ||F - F^- - g||^2 / D = ||g||^2 / D.
  np.testing.assert_allclose(np.asarray(loss), np.sum(g**2, axis=(1, 2, 3)) / 16, rtol=1e-4)
  # The gradient moves F along +g: d loss / d a = -2/D sum g . dF/da, dF/da = x_t / sd.
  grad = jax.grad(lambda p: jnp.sum(obj(_linear_F(), p, x, keys, step, extra)[0]))(params)
  assert float(grad["a"]) == pytest.approx(-2 / 16 * np.sum(g * x_t / sd), rel=1e-3)
  assert float(grad["b"]) == pytest.approx(-2 / 16 * np.sum(g * _bc(t)), rel=1e-3)
  # The adaptive weight is trained: d loss / d w = exp(w) mse - 1 != 0.
  gw = jax.grad(lambda a: jnp.sum(obj(_linear_F(), params, x, keys, step, {**extra, "aux": a})[0]))(aux)
  assert any(float(jnp.abs(v).max()) > 0 for v in jax.tree.leaves(gw))


def test_trigflow_diffusion_target_is_the_velocity():
  x, calls = _data(), []
  obj = TrigFlowObjective(adaptive_weight=False)
  loss, m = obj(_linear_F(calls), {"a": 0.3, "b": 0.1}, x, example_keys(jax.random.key(1), 0, B), 0)
  x_t, t = calls[0]
  cos, sin = _bc(np.cos(t)), _bc(np.sin(t))
  z = (x_t - cos * np.asarray(x)) / sin
  v = cos * z - sin * np.asarray(x)
  F = 0.3 * x_t / 0.5 + 0.1 * _bc(t)
  np.testing.assert_allclose(np.asarray(loss), np.mean((F - v / 0.5) ** 2, axis=(1, 2, 3)), rtol=1e-4)
  assert abs(np.median(t) - math.atan(math.exp(-1.0) / 0.5)) < 0.06


def test_registry_names_every_method():
  assert sorted(OBJECTIVES) == ["cd", "ct", "ect", "edm", "fm", "ict", "meanflow", "scd", "sct",
                                "shortcut", "trigflow"]
