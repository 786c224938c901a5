"""Flow matching (the worked example of "Adding a method"): the loss against a hand computation on
a transparent model, the ODE sampler and the EDM-time map against the exact velocity of Gaussian
data, and the family's place in the registries."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.families import FAMILIES, family_of_spec
from cmjax.families.flow import FLOW_MATCHING, flow_ode
from cmjax.objectives import OBJECTIVES
from cmjax.objectives.common import per_example_normal, split_keys
from cmjax.objectives.fm import FMObjective
from cmjax.train_step import example_keys

S = 0.7  # std of the Gaussian data N(0, S^2 I) with a known exact velocity field


def exact_velocity(params, z, t):
  """E[e - x | z_t = z] for x ~ N(0, S^2 I), e ~ N(0, I), z_t = (1-t) x + t e."""
  del params
  t = t.reshape((-1,) + (1,) * (z.ndim - 1))
  return z * (t - (1 - t) * S**2) / ((1 - t) ** 2 * S**2 + t**2)


def test_registered_as_a_method_and_a_family():
  assert OBJECTIVES["fm"] is FMObjective and FMObjective.family is FLOW_MATCHING
  assert FAMILIES["flow_matching"] is FLOW_MATCHING
  assert family_of_spec(("fm_ode", 18, "heun")) is FLOW_MATCHING


@pytest.mark.parametrize("sampling", ["logit_normal", "uniform"])
def test_loss_is_the_velocity_error_on_a_transparent_model(sampling):
  """v = a z + b t: the loss is ||v - (e - x)||^2 / D with z_t = (1-t) x + t e, t and e from each
  example's own key; a reversed target (x - e) or a swapped path would give other numbers."""
  obj = FMObjective(time_sampling=sampling)
  x = jax.random.normal(jax.random.key(0), (6, 4, 4, 1))
  keys = example_keys(jax.random.key(1), 3, 6)
  params = {"a": 0.3, "b": -0.2}
  model = lambda p, z, t, k=None: p["a"] * z + p["b"] * t.reshape(-1, 1, 1, 1)  # noqa: E731
  loss, m = obj(model, params, x, keys, 0)
  t_keys, e_keys, _ = split_keys(keys, 3)
  t = np.asarray(obj.sample_t(t_keys))
  e = np.asarray(per_example_normal(e_keys, x.shape[1:]))
  xn = np.asarray(x)
  z = (1 - t)[:, None, None, None] * xn + t[:, None, None, None] * e
  v = 0.3 * z - 0.2 * t[:, None, None, None]
  want = ((v - (e - xn)) ** 2).reshape(6, -1).mean(-1)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(m["t"], t)
  assert np.all((t > 0) & (t < 1))
  wrong = ((v - (xn - e)) ** 2).reshape(6, -1).mean(-1)
  assert not np.allclose(loss, wrong, rtol=1e-3)
  # the exact velocity minimises the expected loss: its loss is below a perturbed field's
  big_x = jax.random.normal(jax.random.key(2), (4096, 2)) * S
  big_keys = example_keys(jax.random.key(3), 0, 4096)
  exact = lambda p, z, t, k=None: exact_velocity(None, z, t)  # noqa: E731
  worse = lambda p, z, t, k=None: 1.1 * exact_velocity(None, z, t)  # noqa: E731
  assert float(obj(exact, None, big_x, big_keys, 0)[0].mean()) < float(obj(worse, None, big_x, big_keys, 0)[0].mean())


def test_time_sampling_is_logit_normal():
  t = np.asarray(FMObjective(p_mean=0.5, p_std=0.8).sample_t(
      jax.random.split(jax.random.key(4), 20000)))
  logit = np.log(t / (1 - t))
  assert abs(logit.mean() - 0.5) < 0.03 and abs(logit.std() - 0.8) < 0.03


@pytest.mark.parametrize("solver,steps,tol", [("heun", 18, 2e-3), ("euler", 400, 5e-3)])
def test_ode_sampler_maps_noise_to_the_data_distribution(solver, steps, tol):
  """For Gaussian data the exact flow ODE maps e at t = 1 to S e at t = 0."""
  e = jax.random.normal(jax.random.key(5), (64, 3))
  fn = FLOW_MATCHING.make_sample_fn(("fm_ode", steps, solver), exact_velocity, None)
  x = fn(None, e, None, 0)
  np.testing.assert_allclose(x, S * e, rtol=tol, atol=tol)


def test_consistency_fn_maps_edm_time_onto_the_flow():
  """The family's consistency_fn in EDM coordinates: x_sigma = x + sigma e goes to the PF-ODE end
  x_sigma S / sqrt(S^2 + sigma^2) (Gaussian data), through t = sigma / (1 + sigma)."""
  sigma = jnp.asarray([0.01, 0.3, 2.0, 40.0])
  x = jax.random.normal(jax.random.key(6), (4, 2))
  f = FLOW_MATCHING.consistency_fn(exact_velocity, None, ode_steps=64)
  want = x * (S / jnp.sqrt(S**2 + sigma**2))[:, None]
  np.testing.assert_allclose(f(None, x, sigma), want, rtol=2e-3, atol=2e-4)


def test_ode_rejects_an_unknown_solver():
  with pytest.raises(ValueError, match="unknown ODE solver"):
    flow_ode(exact_velocity, None, jnp.zeros((2, 2)), jnp.linspace(1, 0, 3), "rk4")


def test_bad_time_sampling_is_one_config_line():
  from cmjax.configs import toy2d_fm
  from cmjax.config_validation import ConfigError, validate_config

  c = toy2d_fm.get_config()
  c.fm.time_sampling = "beta"
  with pytest.raises(ConfigError, match="fm.time_sampling 'beta' is unknown"):
    validate_config(c, 1)
