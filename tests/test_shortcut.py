"""Shortcut models (Frans et al. 2025, `cmjax.objectives.shortcut`): the loss against a hand
computation on a transparent model s = a z + b t + c d (bootstrap and flow halves, the
stop-gradient, the EMA target), the dyadic grid, per-example keys, the exact shortcut of Gaussian
data as a fixed point of the bootstrap target and as the n-step sampler's field (1, 2, 4 steps all
land on S e), and the exact shortcut s* of the 8 Gaussians (`cmjax.exact_flow`) against v* and
against its own self-consistency.

Frozen asset tests/assets/shortcut_targets_parity.npz (3 KB, float32): the authors' own
`get_targets` of `targets_shortcut.py` (github.com/kvfrans/shortcut-models, commit
601004348667094e1b71f30942199759412d4432) run on a transparent model in paper time, s_a(x, t_a, k) =
A x + Bc t_a + C dcond(k) with dcond(k) = 2^-k below the flow level log2 M and 0 at it (M = 8, B = 32,
bootstrap_every = 2, images 2 N(0, I) of shape (1, 1, 2); A, Bc, C = 1.5, -0.7, 0.9, so some targets
hit the clip at 4), by /work/scratch/sc_parity/gen.py:
  cd <clone of that commit> && /work/main/.venv/bin/python gen.py
(jax + numpy only). Every other reference is a hand computation or a closed form."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT

from cmjax.exact_flow import shortcut as exact_shortcut, velocity
from cmjax.exact_gmm import GaussianMixture, gmm8
from cmjax.families.mean_flow import MEAN_FLOW
from cmjax.objectives import OBJECTIVES
from cmjax.objectives.common import per_example_normal, split_keys
from cmjax.objectives.shortcut import ShortcutObjective
from cmjax.train_step import example_keys

S = 0.7  # std of the Gaussian data N(0, S^2 I): its flow is linear, z_r = z_t sig(r) / sig(t)


def _sig(t):
  return jnp.sqrt((1 - t) ** 2 * S**2 + t**2)


def gaussian_shortcut(params, z, t, dropout_keys=None, t2=None):
  """The exact s*(z, t, d) = (z - z_{t-d}) / d of N(0, S^2 I) data in the model_fn convention
  (t2 = r = t - d); v*(z, t) = z sig'(t) / sig(t) at d = 0."""
  del params, dropout_keys
  r = t if t2 is None else t2
  d = (t - r)[:, None]
  tt, rr = t[:, None], r[:, None]
  dsig = ((tt - (1 - tt) * S**2) / _sig(tt))
  avg = z * (1 - _sig(rr) / _sig(tt)) / jnp.where(d > 0, d, 1.0)
  return jnp.where(d > 0, avg, z * dsig / _sig(tt))


def transparent(p, z, t, dropout_keys=None, t2=None):
  """s = a z + b t + c d, d = t - t2."""
  d = jnp.zeros_like(t) if t2 is None else t - t2
  return p["a"] * z + p["b"] * t[:, None] + p["c"] * d[:, None]


def _draws(obj, x, keys):
  """(t, d, e, nb) as the objective draws them (numpy)."""
  b = x.shape[0]
  nb = b // obj.bootstrap_every
  lk, tk, ek, _ = split_keys(keys, 4)
  d_b, t_b = obj.sample_bootstrap(lk[:nb], tk[:nb])
  t = np.concatenate([np.asarray(t_b), np.asarray(obj.sample_flow_t(tk[nb:]))])
  d = np.concatenate([np.asarray(d_b), np.zeros(b - nb)])
  return t, d, np.asarray(per_example_normal(ek, x.shape[1:])), nb


def _hand_loss(obj, p, pt, x, keys):
  """Per-example loss and d(mean loss)/d(a, b, c) by hand: targets from pt, no gradient through
  them, the finest half step queried at d = 0, z' = z - h s_1, the second query at t - h."""
  x = np.asarray(x, np.float64)
  t, d, e, nb = _draws(obj, x, keys)
  z = (1 - t)[:, None] * x + t[:, None] * e
  s = lambda q, zz, tt, dd: q["a"] * zz + q["b"] * tt[:, None] + q["c"] * dd[:, None]  # noqa: E731
  h = d[:nb] / 2
  hc = np.where(np.isclose(h, 1.0 / obj.denoise_timesteps), 0.0, h)
  s1 = s(pt, z[:nb], t[:nb], hc)
  z2 = z[:nb] - h[:, None] * s1
  s2 = s(pt, z2, t[:nb] - h, hc)
  target = np.concatenate([(s1 + s2) / 2, (e - x)[nb:]])
  pred = s(p, z, t, d)
  diff = pred - target
  loss = np.mean(diff**2, axis=-1)
  n, dim = x.shape
  grad = {"a": np.sum(2 * diff * z) / (n * dim), "b": np.sum(2 * diff * t[:, None]) / (n * dim),
          "c": np.sum(2 * diff * d[:, None]) / (n * dim)}
  return loss, grad, t, d


def test_registered_as_a_method_of_the_mean_flow_family():
  assert OBJECTIVES["shortcut"] is ShortcutObjective and ShortcutObjective.family is MEAN_FLOW
  assert ShortcutObjective().uses_target and not ShortcutObjective(bootstrap_ema=False).uses_target
  assert float(ShortcutObjective(target_decay=0.9).target_ema(5)) == pytest.approx(0.9)


@pytest.mark.parametrize("ema", [False, True])
def test_loss_and_gradient_by_hand_on_a_transparent_model(ema):
  """Both halves of the loss and the gradient (through the trained pass only) against a hand
  computation; a plus sign in z' or t + h, a missing stop-gradient or a finest half step queried
  at h would give other numbers. With ema the targets come from extra['target']."""
  obj = ShortcutObjective(denoise_timesteps=8, bootstrap_every=2, bootstrap_ema=ema, clip=0.0)
  x = jax.random.normal(jax.random.key(0), (16, 2))
  keys = example_keys(jax.random.key(1), 3, 16)
  p = {"a": jnp.float32(0.3), "b": jnp.float32(-0.8), "c": jnp.float32(1.7)}
  pt = {"a": jnp.float32(-0.4), "b": jnp.float32(0.6), "c": jnp.float32(0.9)} if ema else p
  extra = {"target": pt} if ema else None
  loss, m = obj(transparent, p, x, keys, 0, extra)
  want, want_grad, t, d = _hand_loss(obj, {k: float(v) for k, v in p.items()},
                                     {k: float(v) for k, v in pt.items()}, x, keys)
  np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(m["t"], t)
  np.testing.assert_allclose(m["d"], d)
  assert np.mean(m["loss_bootstrap"]) == pytest.approx(want[:8].mean(), rel=1e-5)
  assert np.mean(m["loss_flow"]) == pytest.approx(want[8:].mean(), rel=1e-5)
  assert set(np.round(d[:8] * 8).astype(int)) <= {2, 4, 8} and 2 in set(np.round(d[:8] * 8))
  grad = jax.grad(lambda q: jnp.mean(obj(transparent, q, x, keys, 0, extra)[0]))(p)
  for k in "abc":
    np.testing.assert_allclose(grad[k], want_grad[k], rtol=1e-4, atol=1e-6)


def test_the_exact_shortcut_is_a_fixed_point_of_the_bootstrap_target():
  """For Gaussian data s* satisfies s*(z, t, 2h) = (s*(z, t, h) + s*(z - h s*, t - h, h)) / 2, so
  the bootstrap half of the loss vanishes for the exact model (and not for a perturbed one) while
  the flow half is the conditional variance of e - x (> 0)."""
  obj = ShortcutObjective(denoise_timesteps=16, bootstrap_every=2, bootstrap_ema=False, clip=0.0)
  x = S * jax.random.normal(jax.random.key(2), (512, 2))
  keys = example_keys(jax.random.key(3), 0, 512)
  loss, m = obj(gaussian_shortcut, None, x, keys, 0)
  coarse, finest = np.asarray(m["d"]) > 2 / 16 + 1e-6, np.isclose(m["d"], 2 / 16)
  assert coarse[:256].sum() > 100 and finest.sum() > 20
  assert float(jnp.max(loss[coarse])) < 1e-9
  # the finest level's halves are queried at d = 0 (two Euler steps of v*): a small, nonzero error
  assert 1e-6 < float(jnp.mean(loss[finest])) < 0.05
  assert float(jnp.mean(loss[256:])) > 0.1
  worse = lambda p, z, t, k=None, t2=None: gaussian_shortcut(p, z, t, k, t2) * (1 + 0.3 * (t - t2)[:, None])  # noqa: E731
  assert float(jnp.mean(obj(worse, None, x, keys, 0)[0][:256])) > 1e-3


def test_the_dyadic_grid():
  """Bootstrap d = 2^-k, k = 0..log2(M) - 1, each level drawn; t on the grid of d in (0, 1]; flow
  t on the grid of 1/M in (0, 1]; the finest half step 1/M is queried at d = 0."""
  obj = ShortcutObjective(denoise_timesteps=8)
  k1, k2 = jnp.split(jax.random.split(jax.random.key(4), 8000), 2)
  d, t = map(np.asarray, obj.sample_bootstrap(k1, k2))
  assert set(np.round(1 / d).astype(int)) == {1, 2, 4}
  for lv in (1, 2, 4):
    j = np.round(t[np.isclose(d, 1 / lv)] * lv)
    np.testing.assert_allclose(t[np.isclose(d, 1 / lv)] * lv, j, atol=1e-6)
    assert set(j.astype(int)) == set(range(1, lv + 1))
  tf = np.asarray(obj.sample_flow_t(k1))
  assert set(np.round(tf * 8).astype(int)) == set(range(1, 9))
  np.testing.assert_allclose(obj.half_step_condition(jnp.asarray([1 / 8, 1 / 4, 1 / 2])), [0, 0.25, 0.5])
  assert ShortcutObjective().num_levels == 7


def test_every_example_depends_only_on_its_own_key():
  """Changing the other examples' data and keys leaves an example's loss unchanged (bootstrap and
  flow parts alike); changing its own key changes it."""
  obj = ShortcutObjective(denoise_timesteps=8, bootstrap_ema=False)
  p = {"a": 0.3, "b": -0.8, "c": 1.7}
  x = jax.random.normal(jax.random.key(5), (8, 2))
  keys = example_keys(jax.random.key(6), 0, 8)
  x2 = x.at[jnp.array([1, 3, 4, 6, 7])].set(5.0)
  keys2 = keys.at[jnp.array([1, 3, 4, 6, 7])].set(example_keys(jax.random.key(7), 0, 5))
  a, b = obj(transparent, p, x, keys, 0)[0], obj(transparent, p, x2, keys2, 0)[0]
  np.testing.assert_allclose(a[jnp.array([0, 2, 5])], b[jnp.array([0, 2, 5])], rtol=1e-6)
  keys3 = keys.at[0].set(keys2[1]).at[5].set(keys2[3])
  c = obj(transparent, p, x, keys3, 0)[0]
  assert not np.isclose(a[0], c[0]) and not np.isclose(a[5], c[5])


@pytest.mark.parametrize("n", [1, 2, 4])
def test_n_shortcut_steps_map_noise_to_the_data(n):
  """The family's ('mf', (1, 1 - 1/n, ..., 1/n)) takes n shortcut steps of d = 1/n; with the exact
  s* of N(0, S^2 I) each lands on S e exactly (a step of the wrong size would not)."""
  e = jax.random.normal(jax.random.key(8), (64, 3))
  times = tuple(1 - i / n for i in range(n))
  fn = MEAN_FLOW.make_sample_fn(("mf", times), gaussian_shortcut, None)
  np.testing.assert_allclose(fn(None, e, None, 0), S * e, rtol=1e-5, atol=1e-5)
  half = lambda p, z, t, k=None, t2=None: gaussian_shortcut(p, z, t, k, t - (t - t2) / 2)  # noqa: E731
  assert not np.allclose(MEAN_FLOW.make_sample_fn(("mf", times), half, None)(None, e, None, 0), S * e,
                         atol=1e-2)


def test_exact_shortcut_of_the_mixture():
  """cmjax.exact_flow.shortcut: s* at d -> 0 is v*; for one Gaussian it is the closed form above;
  on the 8 Gaussians it satisfies the self-consistency the bootstrap targets impose."""
  rng = np.random.default_rng(0)
  g = gmm8()
  z = rng.standard_normal((32, 2))
  t = rng.uniform(0.2, 1.0, 32)
  np.testing.assert_allclose(exact_shortcut(g, z, t, 1e-4, steps=4), velocity(g, z, t), atol=2e-3)
  one = GaussianMixture(np.zeros((1, 2)), S)
  want = gaussian_shortcut(None, jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32),
                           t2=jnp.asarray(t - 0.5 * t, jnp.float32))
  np.testing.assert_allclose(exact_shortcut(one, z, t, 0.5 * t, steps=64), want, rtol=1e-4, atol=1e-4)
  h = 0.25
  t = rng.uniform(2 * h, 1.0, 32)
  s1 = exact_shortcut(g, z, t, h)
  s2 = exact_shortcut(g, z - h * s1, t - h, h)
  np.testing.assert_allclose(exact_shortcut(g, z, t, 2 * h), (s1 + s2) / 2, atol=1e-4)


def test_bad_settings_are_one_config_line():
  from cmjax.config_validation import ConfigError, validate_config
  from cmjax.configs import toy2d_shortcut

  c = toy2d_shortcut.get_config()
  c.shortcut.denoise_timesteps = 96
  with pytest.raises(ConfigError, match="shortcut.denoise_timesteps must be a power of two"):
    validate_config(c, 1)
  with pytest.raises(ValueError, match="no bootstrap part"):
    ShortcutObjective(bootstrap_every=8, bootstrap_ema=False)(
        transparent, {"a": 1.0, "b": 0.0, "c": 0.0}, jnp.zeros((4, 2)),
        example_keys(jax.random.key(0), 0, 4), 0)


def test_bootstrap_targets_match_the_authors_code():
  """The authors' get_targets, translated to cmjax time (t = 1 - t_a, d = 2^-k, s = -s_a): the
  bootstrap rows' targets (clipped, the finest half step at the flow level) equal
  ShortcutObjective.bootstrap_target on the same z, t, d; their t lie on our grids; the flow rows
  are e - x at d = 0 up to the code's (1 - 1e-5)."""
  import os
  with np.load(os.path.join(ROOT, "tests", "assets", "shortcut_targets_parity.npz")) as f:
    ref = {k: f[k] for k in f.files}
  m, nb = int(ref["m"]), int(ref["nb"])
  a, bc, c = (float(v) for v in ref["params"])
  model = lambda p, z, t, k=None, t2=None: -(a * z + bc * (1 - t)[:, None, None, None]  # noqa: E731
                                             + c * (t - t2)[:, None, None, None])
  obj = ShortcutObjective(denoise_timesteps=m, bootstrap_every=2, clip=4.0)
  level = ref["dt_base"]
  t = 1.0 - ref["t"]
  d = 1.0 / 2.0 ** level[:nb]
  got = obj.bootstrap_target(model, None, jnp.asarray(ref["x_t"][:nb]), jnp.asarray(t[:nb]),
                             jnp.asarray(d, jnp.float32))
  np.testing.assert_allclose(got, -ref["v_t"][:nb], rtol=1e-5, atol=1e-5)
  assert np.sum(np.abs(ref["v_t"][:nb]) >= 4 - 1e-6) > 0  # the clip is exercised
  np.testing.assert_allclose(t[:nb] / d, np.round(t[:nb] / d), atol=1e-5)  # t in {d, 2d, ..., 1}
  assert np.all((t[:nb] >= d - 1e-6) & (t[:nb] <= 1 + 1e-6))
  assert np.all(level[nb:] == int(np.log2(m)))  # flow rows: the flow level, our d = 0
  tf = t[nb:]
  assert set(np.round(tf * m).astype(int)) <= set(range(1, m + 1))
  x = ref["images"][: len(tf)]  # the code's flow rows use the batch's first B - nb images
  e = (ref["x_t"][nb:] - (1 - tf)[:, None, None, None] * x) / tf[:, None, None, None]
  # atol: the code's (1 - 1e-5) on e, amplified up to t_a / (1 - t_a) = 7 by recovering e from z
  np.testing.assert_allclose(e - x, -ref["v_t"][nb:], atol=1e-3)
