"""optim.name: 'muon' orthogonalises the momentum of matrices and conv kernels, AdamW the rest."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from cmjax import config_base, config_validation
from cmjax.errors import ConfigError
from cmjax.models.unet import UNet
from cmjax.objectives.ect import ECTObjective
from cmjax.parametrization import ConsistencyPreconditioner, make_model_fn
from cmjax.train_state import build_optimizer, init_train_state, muon_dimension_numbers
from cmjax.train_step import make_train_step


def _optim(**kw):
  c = config_base.get_config().optim
  c.update(**{"name": "muon", "lr": 1e-3, **kw})
  return c


def _grads():
  k = jax.random.split(jax.random.key(0), 3)
  # Badly conditioned gradients: column scales 1..32, so sign(g) or g itself is far from orthogonal.
  return {"dense": {"kernel": jax.random.normal(k[0], (8, 6)) * jnp.array([1, 2, 4, 8, 16, 32.]),
                    "bias": jax.random.normal(k[1], (6,))},
          "conv": {"kernel": jax.random.normal(k[2], (3, 3, 2, 4)) * jnp.array([1, 3, 10, 30.])}}


def _polar(m):
  u, _, vt = np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)
  return u @ vt


def test_muon_orthogonalises_matrices_and_conv_kernels_and_leaves_vectors_to_adamw():
  g = _grads()
  params = jax.tree.map(jnp.zeros_like, g)
  opt = build_optimizer(_optim())
  u, _ = opt.update(g, opt.init(params), params)
  for upd, grad in [(u["dense"]["kernel"], g["dense"]["kernel"]),
                    (u["conv"]["kernel"].reshape(18, 4), g["conv"]["kernel"].reshape(18, 4))]:
    s = np.linalg.svd(np.asarray(upd), compute_uv=False)
    assert s.max() / s.min() < 2.5, s  # the gradient's singular values span 22x and 44x
    # The direction is the polar factor of -momentum (first step: momentum ∝ gradient).
    polar = _polar(-grad)
    cos = np.sum(np.asarray(upd) * polar) / (np.linalg.norm(upd) * np.linalg.norm(polar))
    assert cos > 0.95, cos
  # Vectors: exactly optax's AdamW step with the same b1, b2, eps (and Nesterov, as optax.contrib.muon).
  ref = optax.adamw(1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, nesterov=True)
  b = g["dense"]["bias"]
  ub, _ = ref.update(b, ref.init(b), b)
  np.testing.assert_allclose(u["dense"]["bias"], ub, rtol=1e-6)


def test_muon_dimension_numbers_split_by_rank():
  spec = muon_dimension_numbers({"w": jnp.zeros((3, 3, 2, 4)), "d": jnp.zeros((5, 7)), "b": jnp.zeros(4)})
  assert spec["b"] is None
  assert tuple(spec["d"].reduction_axis) == (0,) and spec["d"].output_axis == 1
  assert tuple(spec["w"].reduction_axis) == (0, 1, 2) and spec["w"].output_axis == 3


@pytest.mark.slow
def test_muon_trains_the_ect_step_and_honours_warmup():
  model = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, dropout=0.0, groups=4)
  opt = build_optimizer(_optim(warmup_steps=2, grad_clip=1.0))
  model_fn = make_model_fn(model, ConsistencyPreconditioner())
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 1))
  step = jax.jit(make_train_step(model_fn, ECTObjective(q=2.0, stage_steps=1), opt, 0.9))
  batch = {"image": jax.random.uniform(jax.random.key(1), (8, 8, 8, 1), minval=-1, maxval=1)}
  p0 = state.params
  state, m = step(state, batch, jax.random.key(2))  # step 0 of a 2-step warm-up: lr 0
  assert np.isfinite(float(m["loss"]))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(state.params)))
  for i in range(3):  # the zero-initialised output conv first, then gradient reaches every layer
    state, m = step(state, batch, jax.random.key(3 + i))
  assert np.isfinite(float(m["loss"]))
  moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(state.params))]
  assert min(moved) > 0, moved


def test_bad_muon_settings_are_one_line():
  c = config_base.get_config()
  c.optim.update(name="muon", muon_beta=1.0)
  with pytest.raises(ConfigError, match="muon_beta"):
    config_validation.validate_config(c, num_devices=1)
  c.optim.update(name="lion", muon_beta=0.95)
  with pytest.raises(ConfigError, match="unknown optimizer 'lion'"):
    config_validation.validate_config(c, num_devices=1)
  assert isinstance(c.optim, ml_collections.ConfigDict)


@pytest.mark.parametrize("name", ["adam", "radam", "muon"])
def test_weight_decay_never_moves_edm2s_fourier_buffers(name):
  # EDM2's MPFourier frequencies/phases are fixed buffers stored in 'params' (zero gradient);
  # decoupled weight decay would shrink them every step unless the optimiser masks them.
  from cmjax.models import buffer_mask, build_model, model_config
  cfg = model_config("edm2", model_channels=8, channel_mult=(1,), num_blocks=1, attn_resolutions=())
  model = build_model(cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)))["params"]
  grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
  mask = buffer_mask(cfg)(params)
  grads = jax.tree.map(lambda g, m: jnp.zeros_like(g) if m else g, grads, mask)  # as stop_gradient gives
  assert sum(jax.tree.leaves(mask)) == 2  # emb_fourier's freqs and phases
  for frozen, moved in ((buffer_mask(cfg), False), (None, True)):
    opt = build_optimizer(_optim(name=name, weight_decay=0.1), frozen=frozen)
    updates, _ = opt.update(grads, opt.init(params), params)
    new = optax.apply_updates(params, updates)
    for p, q, m in zip(jax.tree.leaves(params), jax.tree.leaves(new), jax.tree.leaves(mask)):
      if m:  # without the mask the decay moves the buffers: the test can fail
        assert bool(jnp.any(p != q)) == moved
      else:
        assert bool(jnp.any(p != q))
  assert buffer_mask(model_config("unet")) is None
