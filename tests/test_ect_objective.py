"""ECT loss with a transparent model f = a * x, so every term can be checked by hand."""
import jax
import jax.numpy as jnp
import numpy as np

from cmjax import schedules
from cmjax.objectives.ect import ECTObjective
from cmjax.train_step import example_keys

B = 64


def _run(obj, step, a=1.3, record=None):
  x = jax.random.uniform(jax.random.key(0), (B, 8, 8, 1), minval=-1, maxval=1)
  keys = example_keys(jax.random.key(1), step, B)

  def f(params, xin, t, drop_keys):
    if record is not None:
      record.append((xin, t, drop_keys))
    return params["a"] * xin

  loss, m = obj(f, {"a": jnp.float32(a)}, x, keys, jnp.int32(step))
  return x, loss, m, f


def test_terms_match_hand_computation():
  obj = ECTObjective(q=2.0, stage_steps=100)
  calls = []
  x, loss, m, _ = _run(obj, 150, record=calls)
  (x_t, t, k_student), (x_r, r_eval, k_teacher) = calls
  # Matched dropout: the teacher pass uses exactly the student's dropout keys.
  np.testing.assert_array_equal(jax.random.key_data(k_student), jax.random.key_data(k_teacher))
  # r follows the ECT mapping at stage 1 (decay 1/4).
  r_hand = np.maximum(np.asarray(t) * (1 - 0.25 * (1 + 8 / (1 + np.exp(np.asarray(t))))), 0)
  np.testing.assert_allclose(np.asarray(m["r"]), r_hand, rtol=1e-5, atol=1e-7)
  # Shared noise: x_t = x + t z and x_r = x + r z with the same z.
  z_t = (x_t - x) / t[:, None, None, None]
  z_r = (x_r - x) / r_eval[:, None, None, None]
  np.testing.assert_allclose(np.asarray(z_t), np.asarray(z_r), rtol=1e-3, atol=1e-3)
  # Loss: w = 1/(t - r); target = x where r <= sigma_min, else stopgrad f(x_r).
  a = 1.3
  r = np.asarray(m["r"])
  target = np.where((r <= 0.002)[:, None, None, None], np.asarray(x), a * np.asarray(x_r))
  dist = np.sqrt(np.sum((a * np.asarray(x_t) - target) ** 2, axis=(1, 2, 3)))
  np.testing.assert_allclose(np.asarray(loss), dist / (np.asarray(t) - r), rtol=1e-4)
  assert 0 < float(jnp.mean(m["at_boundary"])) < 1  # both cases are exercised at this stage


def test_unmatched_dropout_ablation_draws_an_independent_teacher_mask():
  calls = []
  _run(ECTObjective(q=2.0, stage_steps=100, matched_dropout=False), 150, record=calls)
  (_, _, k_student), (_, _, k_teacher) = calls
  ks, kt = np.asarray(jax.random.key_data(k_student)), np.asarray(jax.random.key_data(k_teacher))
  assert not np.any(np.all(ks == kt, axis=-1))  # no example shares its mask
  assert len({row.tobytes() for row in kt}) == B  # still one key per example


def test_teacher_is_stop_gradient():
  obj = ECTObjective(q=2.0, stage_steps=100)
  x = jax.random.uniform(jax.random.key(0), (B, 8, 8, 1), minval=-1, maxval=1)
  keys = example_keys(jax.random.key(1), 500, B)
  f = lambda p, xin, t, k: p["a"] * xin
  grad = jax.grad(lambda p: jnp.mean(obj(f, p, x, keys, jnp.int32(500))[0]))({"a": jnp.float32(1.0)})
  # By hand: d/da w ||a x_t - sg(a x_r)|| = w x_t . Delta / ||Delta|| (the teacher term carries
  # no gradient); without the stop-gradient it would be w ||x_t - x_r|| = ||z||.
  _, _, m, _ = _run(obj, 500, a=1.0)
  calls = []
  _run(obj, 500, a=1.0, record=calls)
  (x_t, t, _), (x_r, _, _) = calls
  r = np.asarray(m["r"])
  tgt = np.where((r <= 0.002)[:, None, None, None], np.asarray(x), np.asarray(x_r))
  delta = (np.asarray(x_t) - tgt).reshape(B, -1)
  per = np.sum(np.asarray(x_t).reshape(B, -1) * delta, 1) / np.linalg.norm(delta, axis=1)
  expected = np.mean(per / (np.asarray(t) - r))
  assert float(grad["a"]) == np.float32(expected) or np.isclose(float(grad["a"]), expected, rtol=1e-3)
  z_norm = np.mean(np.linalg.norm(((np.asarray(x_t) - np.asarray(x)) / np.asarray(t)[:, None, None, None]).reshape(B, -1), axis=1))
  assert not np.isclose(float(grad["a"]), z_norm, rtol=1e-2)


def test_key_streams_are_independent():
  obj = ECTObjective(q=2.0, stage_steps=100)
  calls = []
  x, _, m, _ = _run(obj, 0, record=calls)
  (x_t, t, drop), _ = calls
  # Per-example keys differ, so t and z differ between examples ...
  assert len(np.unique(np.asarray(t))) == B
  # ... t, z and dropout come from different split streams of each example key.
  keys = example_keys(jax.random.key(1), 0, B)
  kd = lambda k: np.asarray(jax.random.key_data(k))
  assert not np.array_equal(kd(drop), kd(keys))
  t_from_drop = jnp.clip(jax.vmap(lambda k: schedules.lognormal_noise_levels(k, (), -1.1, 2.0))(drop), 0.002, 80)
  assert not np.allclose(np.asarray(t_from_drop), np.asarray(t))
  # A different step gives different noise levels for the same examples.
  _, _, m2, _ = _run(obj, 1)
  assert not np.allclose(np.asarray(m["t"]), np.asarray(m2["t"]))


def test_snr_plus_weighting_and_huber():
  obj = ECTObjective(q=4.0, stage_steps=100, c=0.06, weighting="snr_plus")
  calls = []
  x, loss, m, _ = _run(obj, 700, record=calls)
  (x_t, t, _), (x_r, _, _) = calls
  r = np.asarray(m["r"])
  tgt = np.where((r <= 0.002)[:, None, None, None], np.asarray(x), 1.3 * np.asarray(x_r))
  d2 = np.sum((1.3 * np.asarray(x_t) - tgt) ** 2, axis=(1, 2, 3))
  w = (np.asarray(t) ** 2 + 0.25) / (np.asarray(t) * 0.5) ** 2
  np.testing.assert_allclose(np.asarray(loss), w * (np.sqrt(d2 + 0.06**2) - 0.06), rtol=1e-4)
