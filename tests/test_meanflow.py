"""MeanFlow (`cmjax.objectives.meanflow`) and the exact average velocity of the 8 Gaussians
(`cmjax.exact_flow`, `cmjax.evaluation.flow_error`).

- the (t, r) samplers v0 / v1 against a numpy re-run of the authors' time_sampler.py on the same
  draws; the loss on a transparent model u = a z + b t + c r against a hand computation (the jvp
  term's sign and tangent, the stop-gradient on the target and on the adaptive weight, the
  shared dropout mask);
- parity with the authors' PyTorch loss: tests/assets/meanflow_torch_parity.npz (5.9 KB, float32)
  holds x, e, t, r, the weights of a tiny nonlinear net u = tanh(flat(z) W + t wt + (t - r) wh + b)
  and the loss and its gradients from MeanFlow.forward_with_loss of Gsunshine/py-meanflow at commit
  1f6d72d94247c8fdeb89489acca1a8007a6baf6c (meanflow/models/meanflow.py; t, r and e patched to the
  frozen values, norm_p 0.75 and 1.0, norm_eps 1e-3), produced with torch 2.13 (CPU) by
    cd py-meanflow/meanflow && python gen_meanflow_parity.py tests/assets/meanflow_torch_parity.npz
  (the script lives outside the repo, /work/scratch/meanflow_gen/gen_meanflow_parity.py);
- the exact flow: u*(z, r, t) -> v*(z, t) as r -> t, and the MeanFlow identity
  u* = v* - (t - r) d/dt u* along the exact trajectory (finite differences, RK4 precision);
  `average_velocity_errors` is ~0 for the exact u* and grows with t - r for the exact v*.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.errors import ConfigError
from cmjax.evaluation.flow_error import average_velocity_errors, shortcut_errors
from cmjax.exact_flow import average_velocity, flow_ode, noised, velocity
from cmjax.exact_gmm import gmm8, jax_denoiser
from cmjax.families import FAMILIES
from cmjax.families.mean_flow import MEAN_FLOW
from cmjax.objectives import OBJECTIVES
from cmjax.objectives.common import per_example_normal, split_keys
from cmjax.objectives.meanflow import MeanFlowObjective
from cmjax.train_step import example_keys

from conftest import ROOT

ASSET = f"{ROOT}/tests/assets/meanflow_torch_parity.npz"


def test_registered_in_the_mean_flow_family():
  assert OBJECTIVES["meanflow"] is MeanFlowObjective
  assert MeanFlowObjective.family is MEAN_FLOW and FAMILIES["mean_flow"] is MEAN_FLOW


@pytest.mark.parametrize("field,value", [("tr_sampler", "v2"), ("p_std_t", 0.0), ("p_std_r", -1.0),
                                         ("ratio_r_neq_t", 1.5), ("norm_eps", 0.0), ("norm_p", -1.0)])
def test_bad_hyperparameters_are_refused(field, value):
  with pytest.raises(ValueError, match=field):
    MeanFlowObjective(**{field: value})


def _sig(a):
  return 1.0 / (1.0 + np.exp(-a))


@pytest.mark.parametrize("sampler", ["v0", "v1"])
def test_time_sampler_matches_the_authors_post_processing(sampler):
  """time_sampler.py: v0 sorts (t, r) then sets r = t with prob 1 - ratio; v1 sets r = t first and
  then r = min(t, r). Re-run in numpy on the same normal/uniform draws of each example's keys."""
  obj = MeanFlowObjective(tr_sampler=sampler, p_mean_t=-0.6, p_std_t=1.6, p_mean_r=-4.0,
                          p_std_r=1.6, ratio_r_neq_t=0.75)
  keys = example_keys(jax.random.key(0), 0, 4000)
  t, r = map(np.asarray, obj.sample_tr(keys))
  kt, kr, km = split_keys(keys, 3)
  nt = np.asarray(jax.vmap(lambda k: jax.random.normal(k, ()))(kt))
  nr = np.asarray(jax.vmap(lambda k: jax.random.normal(k, ()))(kr))
  u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, ()))(km))
  t0, r0 = _sig(-0.6 + 1.6 * nt), _sig(-4.0 + 1.6 * nr)
  same = u < 0.25
  if sampler == "v0":
    want_t, want_r = np.maximum(t0, r0), np.where(same, np.maximum(t0, r0), np.minimum(t0, r0))
  else:
    want_t, want_r = t0, np.minimum(t0, np.where(same, t0, r0))
  np.testing.assert_allclose(t, want_t, rtol=1e-5)
  np.testing.assert_allclose(r, want_r, rtol=1e-5)
  # r = t for the masked quarter (v0), and also where r0 >= t0 (v1's r = min(t, r))
  want_same = same if sampler == "v0" else same | (r0 >= t0)
  assert np.all(r <= t) and np.array_equal(r == t, want_same)
  assert abs(np.mean(same) - 0.25) < 0.03


# ---- a transparent model u = a z + b t + c r: du/dt along (v, 0, 1) = a v + b ----------------

def _transparent(p, z, t, keys=None, t2=None):
  s = lambda q: q.reshape((-1,) + (1,) * (z.ndim - 1))  # noqa: E731
  return p["a"] * z + p["b"] * s(t) + p["c"] * s(t2)


def _hand(p, x, e, t, r, norm_p, eps):
  """numpy: (loss, err, d loss / d a with u_tgt and the weight frozen)."""
  s = lambda q: q.reshape((-1,) + (1,) * (x.ndim - 1))  # noqa: E731
  z = s(1 - t) * x + s(t) * e
  v = e - x
  u = p["a"] * z + p["b"] * s(t) + p["c"] * s(r)
  tgt = v - s(t - r) * (p["a"] * v + p["b"])
  diff = (u - tgt).reshape(len(x), -1)
  err = np.sum(diff**2, -1)
  w = (err + eps) ** norm_p
  grad_a = np.sum(2 * diff * z.reshape(len(x), -1), -1) / w
  return err / w, err, grad_a


def _setup(n=6):
  x = np.asarray(jax.random.normal(jax.random.key(0), (n, 3, 3, 1)))
  keys = example_keys(jax.random.key(1), 3, n)
  obj = MeanFlowObjective(tr_sampler="v0", p_mean_t=-0.4, p_std_t=1.0, p_mean_r=-0.4, p_std_r=1.0,
                          ratio_r_neq_t=0.75, norm_p=0.75, norm_eps=1e-3)
  tr_keys, e_keys, _ = split_keys(keys, 3)
  t, r = map(np.asarray, obj.sample_tr(tr_keys))
  e = np.asarray(per_example_normal(e_keys, x.shape[1:]))
  return obj, x, keys, e, t, r


def test_loss_on_a_transparent_model_matches_the_hand_computation():
  """u_tgt = v - (t - r)(a v + b): a '+' sign, a tangent on r instead of t (a v + c) or a missing
  (t - r) factor give other numbers."""
  obj, x, keys, e, t, r = _setup()
  assert np.sum(r < t) >= 2  # the test sees examples with r != t
  p = {"a": 0.3, "b": -0.7, "c": 0.4}
  loss, m = obj(_transparent, p, jnp.asarray(x), keys, 0)
  want, err, _ = _hand(p, x, e, t, r, 0.75, 1e-3)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(m["mse"], err / 9, rtol=1e-5)
  np.testing.assert_allclose(m["t"], t)
  np.testing.assert_allclose(m["r"], r)
  s = lambda q: q.reshape(-1, 1, 1, 1)  # noqa: E731
  z, v = s(1 - t) * x + s(t) * e, e - x
  u = 0.3 * z - 0.7 * s(t) + 0.4 * s(r)
  for wrong_tgt in (v + s(t - r) * (0.3 * v - 0.7), v - s(t - r) * (0.3 * v + 0.4), v - (0.3 * v - 0.7)):
    wrong = np.sum(((u - wrong_tgt) ** 2).reshape(6, -1), -1)
    assert not np.allclose(loss, wrong / (wrong + 1e-3) ** 0.75, rtol=1e-3)


def test_gradient_freezes_the_target_and_the_adaptive_weight():
  """d loss / d a = 2 <u - u_tgt, z> / (err + eps)^p: the target (which depends on a through
  du/dt = a v + b) and the weight are stop-gradients; without either the gradient differs."""
  obj, x, keys, e, t, r = _setup()
  p = {"a": 0.3, "b": -0.7, "c": 0.4}
  g = jax.grad(lambda q: obj(_transparent, q, jnp.asarray(x), keys, 0)[0].sum())(p)
  _, err, grad_a = _hand(p, x, e, t, r, 0.75, 1e-3)
  np.testing.assert_allclose(g["a"], grad_a.sum(), rtol=1e-4)
  s = lambda q: q.reshape(-1, 1, 1, 1)  # noqa: E731
  z, v = s(1 - t) * x + s(t) * e, e - x
  u = 0.3 * z - 0.7 * s(t) + 0.4 * s(r)
  diff = (u - (v - s(t - r) * (0.3 * v - 0.7))).reshape(6, -1)
  w = (err + 1e-3) ** 0.75
  through_target = np.sum(2 * diff * (z + s(t - r) * v).reshape(6, -1), -1) / w
  through_weight = grad_a * (1 - 0.75 * err / (err + 1e-3))
  assert abs(g["a"] - through_target.sum()) > 1e-2 * abs(grad_a.sum())
  assert abs(g["a"] - through_weight.sum()) > 1e-2 * abs(grad_a.sum())


def test_adaptive_weight():
  """err / sg((err + c)^p): the value and d/d err = 1 / (err + c)^p (p = 0: plain squared error)."""
  err = jnp.asarray([0.0, 0.5, 3.0, 40.0])
  for p, c in ((0.75, 1e-3), (1.0, 0.1), (0.0, 1e-3)):
    obj = MeanFlowObjective(norm_p=p, norm_eps=c)
    np.testing.assert_allclose(obj.adaptive_loss(err), err / (err + c) ** p, rtol=1e-6)
    np.testing.assert_allclose(jax.grad(lambda q: obj.adaptive_loss(q).sum())(err),
                               1.0 / (err + c) ** p, rtol=1e-6)


def test_the_jvp_pass_is_the_trained_pass_with_one_dropout_mask():
  """A model whose slope depends on the example's dropout key, a + k_i: the prediction and du/dt
  = (a + k_i) v use the same k_i (a second, independently masked pass would not)."""
  obj, x, keys, e, t, r = _setup()
  noise = lambda k: jax.vmap(lambda kk: jax.random.uniform(kk, ()))(k)  # noqa: E731
  model = lambda p, z, tt, k=None, t2=None: (p["a"] + noise(k)).reshape(-1, 1, 1, 1) * z  # noqa: E731
  loss, _ = obj(model, {"a": 0.3}, jnp.asarray(x), keys, 0)
  ki = np.asarray(noise(split_keys(keys, 3)[2])).reshape(-1, 1, 1, 1)
  s = lambda q: q.reshape(-1, 1, 1, 1)  # noqa: E731
  z, v = s(1 - t) * x + s(t) * e, e - x
  err = np.sum(((0.3 + ki) * z - (v - s(t - r) * (0.3 + ki) * v)) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(loss, err / (err + 1e-3) ** 0.75, rtol=1e-5)


@pytest.mark.parametrize("norm_p", [0.75, 1.0])
def test_parity_with_the_authors_pytorch_loss(norm_p):
  """Loss (batch mean) and gradients of a tiny tanh net against MeanFlow.forward_with_loss."""
  a = np.load(ASSET)
  b = a["x"].shape[0]
  params = {k: jnp.asarray(a[k]) for k in ("W", "wt", "wh", "bias")}

  def u_fn(p, z, r, t):
    h = t - r
    y = jnp.tanh(z.reshape(b, -1) @ p["W"] + t[:, None] * p["wt"] + h[:, None] * p["wh"] + p["bias"])
    return y.reshape(z.shape)

  obj = MeanFlowObjective(norm_p=norm_p, norm_eps=1e-3)
  x, e, t, r = (jnp.asarray(a[k]) for k in ("x", "e", "t", "r"))
  z = (1 - t)[:, None, None, None] * x + t[:, None, None, None] * e
  loss = lambda p: obj.loss_terms(lambda z_, r_, t_: u_fn(p, z_, r_, t_), z, e - x, t, r)[0].mean()  # noqa: E731
  tag = str(norm_p).replace(".", "")
  np.testing.assert_allclose(loss(params), a[f"loss_p{tag}"], rtol=1e-5)
  g = jax.grad(loss)(params)
  for k in params:
    np.testing.assert_allclose(g[k], a[f"grad_p{tag}_{k}"], rtol=2e-4, atol=1e-6)


# ---- the exact flow of the 8 Gaussians --------------------------------------------------------

def test_exact_average_velocity_tends_to_the_velocity():
  g, rng = gmm8(), np.random.default_rng(0)
  t = rng.uniform(0.1, 1.0, 64)
  z = noised(g, 64, t, rng)
  v = velocity(g, z, t)
  u = average_velocity(g, z, t - 1e-4, t, steps=8)
  np.testing.assert_allclose(u, v, atol=2e-3 * np.abs(v).max())
  assert np.abs(average_velocity(g, z, t - 0.3, t) - v).max() > 0.05  # and differs away from r = t


def test_meanflow_identity_holds_for_the_exact_average_velocity():
  """u*(z_t, r, t) = v*(z_t, t) - (t - r) d/dt u*(z_t, r, t), d/dt along the exact trajectory
  (central differences of step 1e-3): MeanFlow Eq. 6. Without the (t - r) term it fails."""
  g, rng = gmm8(), np.random.default_rng(1)
  n, h = 64, 1e-3
  t = rng.uniform(0.3, 0.95, n)
  r = t - rng.uniform(0.1, 0.25, n)
  z = noised(g, n, t, rng)
  zp, zm = flow_ode(g, z, t, t + h, 16), flow_ode(g, z, t, t - h, 16)
  dudt = (average_velocity(g, zp, r, t + h, 256) - average_velocity(g, zm, r, t - h, 256)) / (2 * h)
  u, v = average_velocity(g, z, r, t, 256), velocity(g, z, t)
  np.testing.assert_allclose(u, v - (t - r)[:, None] * dudt, atol=1e-4)
  assert np.abs(u - v).max() > 1e-2


def _exact_u_fn():
  """fn(params, z, t, t2=r) -> u* (numpy through a callback: the exact model)."""
  g = gmm8()
  def fn(params, z, t, t2=None):
    del params
    cb = lambda z_, r_, t_: average_velocity(g, z_, r_, t_).astype(np.float32)  # noqa: E731
    return jax.pure_callback(cb, jax.ShapeDtypeStruct(z.shape, jnp.float32), z, t2, t)
  return fn


def _exact_v_fn():
  """fn(params, z, t, t2=r) -> v*(z, t), ignoring r (a flow-matching model that knows v*)."""
  den = jax_denoiser(gmm8())
  def fn(params, z, t, t2=None):
    s = t / (1 - t)
    return (z - den(None, z / (1 - t)[:, None], s)) / t[:, None]
  return fn


def test_average_velocity_errors():
  """~0 for u* itself; for v* in place of u* it grows with t - r; a zero model scores mean ||u*||;
  the keys carry the prefix; a bad bucket is refused."""
  g = gmm8()
  exact = average_velocity_errors(_exact_u_fn(), None, g, seed=3, num_per_bucket=64)
  assert set(exact) == {f"meanflow_error_{b}" for b in ("small", "medium", "large")}
  assert max(exact.values()) < 1e-3, exact
  inst = average_velocity_errors(_exact_v_fn(), None, g, seed=3, num_per_bucket=64)
  assert inst["meanflow_error_small"] < inst["meanflow_error_large"], inst
  assert inst["meanflow_error_large"] > 0.1, inst
  zero = average_velocity_errors(lambda p, z, t, t2=None: jnp.zeros_like(z), None, g, seed=3,
                                 num_per_bucket=64)
  assert zero["meanflow_error_large"] > 0.3, zero
  sc = shortcut_errors(lambda p, z, t, t2=None: jnp.zeros_like(z), None, g, seed=3, num_per_bucket=64)
  assert sc == {k.replace("meanflow", "shortcut"): v for k, v in zero.items()}
  with pytest.raises(ConfigError, match="bucket"):
    average_velocity_errors(_exact_v_fn(), None, g, buckets=(("bad", 0.5, 0.2),))


def test_cifar10_config_is_the_authors_scripts():
  """configs/cifar10_meanflow.py against cifar10_v1.sh / cifar10_v0.sh / train_arg_parser.py /
  model_configs.py of Gsunshine/py-meanflow 1f6d72d."""
  from configs import cifar10_meanflow
  c = cifar10_meanflow.get_config()
  assert (c.method, c.meanflow.tr_sampler, c.meanflow.ratio_r_neq_t) == ("meanflow", "v1", 0.75)
  assert (c.meanflow.p_mean_t, c.meanflow.p_std_t, c.meanflow.p_mean_r, c.meanflow.p_std_r) == (-0.6, 1.6, -4.0, 1.6)
  assert (c.meanflow.norm_p, c.meanflow.norm_eps) == (0.75, 1e-3)
  assert (c.optim.name, c.optim.lr, c.optim.b1, c.optim.b2, c.optim.grad_clip) == ("adam", 6e-4, 0.9, 0.999, 0.0)
  assert (c.train.batch_size, c.train.num_steps, c.optim.warmup_steps) == (1024, 768_000, 9_600)
  assert c.train.ema_rate == 0.9999 and c.model.dropout == 0.2 and c.model.label_dim == 0
  assert (c.model.name, c.model.embedding_type, c.model.channel_mult_noise) == ("song_unet", "positional", 2)
  assert tuple(c.model.channel_mult) == (2, 2, 2) and tuple(c.model.resample_filter) == (1, 3, 3, 1)
  v0 = cifar10_meanflow.get_config("v0").meanflow
  assert (v0.tr_sampler, v0.p_mean_t, v0.p_std_t, v0.p_mean_r, v0.p_std_r) == ("v0", -2.0, 2.0, -2.0, 2.0)


def test_guidance_on_a_transparent_class_conditional_model():
  """Class-conditional u = a z + b t + c r + w[y] (w[null] = 0): the tangent and target use
  v_g = omega v + kappa u(z, t, t | y) + (1 - omega - kappa) u(z, t, t | null) inside the
  t-window (v outside), dropped examples train on (null, v); the authors' JAX meanflow.py."""
  import dataclasses
  obj, x, keys, e, t, r = _setup(8)
  k = 3
  w = np.asarray([0.5, -1.0, 2.0, 0.0])  # per-class offsets; the null class (id k) adds 0
  y = np.asarray([0, 1, 2, 0, 1, 2, 0, 1])
  g = dataclasses.replace(obj, cfg_omega=2.0, cfg_kappa=0.5, cfg_t_start=0.0, cfg_t_end=0.6,
                          class_dropout_prob=0.4, num_classes=k, labels=jnp.asarray(y))
  p = {"a": 0.3, "b": -0.7, "c": 0.4}
  s = lambda q: q.reshape(-1, 1, 1, 1)  # noqa: E731

  def model(q, z, tt, keys=None, labels=None, t2=None):
    return q["a"] * z + q["b"] * s(tt) + q["c"] * s(t2) + s(jnp.asarray(w)[labels])

  loss, m = g(model, p, jnp.asarray(x), keys, 0)
  np.testing.assert_allclose(m["t"], t)
  _, e_keys, _ = split_keys(keys, 3)
  c_keys = jax.vmap(lambda kk: jax.random.fold_in(kk, 1))(e_keys)
  drop = np.asarray(jax.vmap(lambda kk: jax.random.uniform(kk, ()))(c_keys)) < 0.4
  assert drop.any() and (~drop).any() and (t > 0.6).any() and (t <= 0.6).any()
  z, v = s(1 - t) * x + s(t) * e, e - x
  inst = lambda lab: 0.3 * z - 0.7 * s(t) + 0.4 * s(t) + s(w[lab])  # noqa: E731
  win = s(t <= 0.6)
  om, ka = np.where(win, 2.0, 1.0), np.where(win, 0.5, 0.0)
  v_g = om * v + ka * inst(y) + (1 - om - ka) * inst(np.full(8, k))
  v_g = np.where(s(drop), v, v_g)
  y_in = np.where(drop, k, y)
  u = 0.3 * z - 0.7 * s(t) + 0.4 * s(r) + s(w[y_in])
  err = np.sum((u - (v_g - s(t - r) * (0.3 * v_g - 0.7))) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(loss, err / (err + 1e-3) ** 0.75, rtol=1e-5)
  # unguided (omega = 1, kappa = 0, no dropout): the conditional loss with v_t
  plain = dataclasses.replace(obj, num_classes=k, labels=jnp.asarray(y))
  u0 = 0.3 * z - 0.7 * s(t) + 0.4 * s(r) + s(w[y])
  err0 = np.sum((u0 - (v - s(t - r) * (0.3 * v - 0.7))) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(plain(model, p, jnp.asarray(x), keys, 0)[0], err0 / (err0 + 1e-3) ** 0.75,
                             rtol=1e-5)
  with pytest.raises(ValueError, match="num_classes"):
    MeanFlowObjective(cfg_omega=2.0)


def test_the_train_step_hands_the_batch_labels_to_the_guided_target():
  """`condition_on_labels` gives MeanFlow (uses_labels) the batch's labels and a model_fn that still
  takes labels= (for u(z, t, t | null)), with the augmentation labels bound; the train step's loss
  is then the guided loss, not the conditional loss with the labels bound into model_fn."""
  import dataclasses

  import optax

  from cmjax.objectives.common import condition_on_labels
  from cmjax.train_state import TrainState
  from cmjax.train_step import make_train_step
  obj, x, _, _, _, _ = _setup(8)
  w = jnp.asarray([0.5, -1.0, 2.0, 0.0])  # per-class offsets; the null class (id 3) adds 0
  y = jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1])
  g = dataclasses.replace(obj, cfg_omega=1.0, cfg_kappa=0.5, class_dropout_prob=0.2, num_classes=3)
  s = lambda q: q.reshape(-1, 1, 1, 1)  # noqa: E731
  seen = []

  def model(q, z, tt, keys=None, labels=None, t2=None, augment_labels=None):
    seen.append(augment_labels)
    return q["a"] * z + q["b"] * s(tt) + q["c"] * s(t2) + s(w[labels])

  p = {"a": jnp.asarray(0.3), "b": jnp.asarray(-0.7), "c": jnp.asarray(0.4)}
  opt = optax.sgd(0.0)
  state = TrainState(step=jnp.asarray(0, jnp.int32), params=p, ema_params=p,
                     opt_state=opt.init((p, {})))
  key = jax.random.key(5)
  _, m = jax.jit(make_train_step(model, g, opt, 0.9))(state, {"image": jnp.asarray(x), "label": y},
                                                      key)
  ks = example_keys(key, 0, 8)
  guided = float(jnp.mean(dataclasses.replace(g, labels=y)(model, p, jnp.asarray(x), ks, 0)[0]))
  plain = float(jnp.mean(dataclasses.replace(obj, num_classes=3, labels=y)(
      model, p, jnp.asarray(x), ks, 0)[0]))
  np.testing.assert_allclose(float(m["loss"]), guided, rtol=1e-5)
  assert abs(guided - plain) > 1e-3 * abs(plain)  # guidance changes the loss here
  aug = jnp.ones((8, 2))
  mf, o = condition_on_labels(model, g, y, aug)
  assert o.labels is y and mf(p, jnp.asarray(x), jnp.full((8,), 0.5), None, labels=y,
                              t2=jnp.zeros(8)).shape == x.shape
  assert seen[-1] is aug


def test_guided_digits_config_validates_and_its_null_class_must_be_the_label_dim():
  from cmjax.config_validation import validate_config
  from cmjax.configs import digits_meanflow_cfg
  c = digits_meanflow_cfg.get_config()
  validate_config(c, 1)
  c.model.label_dim = 0
  with pytest.raises(ConfigError, match=r"meanflow.num_classes=10 must equal model.label_dim=0"):
    validate_config(c, 1)
