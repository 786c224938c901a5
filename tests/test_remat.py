"""`model.remat`: the U-Nets recompute each residual block in the backward pass (less activation
memory) with the same parameters, outputs and gradients (DiT's: tests/test_latent.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cmjax.config_base import is_resumable
from cmjax.models.adm_unet import ADMUNet
from cmjax.models.edm2_unet import EDM2UNet
from cmjax.models.song_unet import ddpmpp_cifar10

# Tiny networks with dropout (so the recomputed masks must be the stored ones), attention and
# labels where the network has them.
NETS = {
    "song_unet": lambda **kw: ddpmpp_cifar10(model_channels=16, channel_mult=(1, 2), num_blocks=1,
                                             attn_resolutions=(4,), dropout=0.3, **kw),
    "adm": lambda **kw: ADMUNet(model_channels=32, channel_mult=(1, 2), num_blocks=1,
                                attn_resolutions=(4,), dropout=0.3, label_dim=3, **kw),
    "edm2": lambda **kw: EDM2UNet(model_channels=16, channel_mult=(1, 2), num_blocks=1,
                                  attn_resolutions=(4,), channels_per_head=8, dropout=0.3,
                                  label_dim=3, **kw),
}


@pytest.mark.parametrize("name", sorted(NETS))
def test_remat_is_wired_in_every_unet(name):
  """Tracing only (nothing compiled): the same parameter shapes, and a checkpoint (remat) in the
  backward pass exactly when model.remat is set."""
  x, c = jnp.zeros((2, 8, 8, 3)), jnp.zeros((2,))
  labels = {} if name == "song_unet" else {"class_labels": jnp.array([0, 2])}
  jaxprs, shapes = {}, {}
  for flag in (False, True):
    model = NETS[name](remat=flag)
    shapes[flag] = jax.eval_shape(lambda: model.init(jax.random.key(1), x, c, **labels))
    loss = lambda p, m=model: jnp.sum(m.apply(p, x, c, train=True, rngs={"dropout": jax.random.key(3)},
                                               **labels) ** 2)
    jaxprs[flag] = str(jax.make_jaxpr(jax.grad(loss))(shapes[flag]))
  assert jax.tree.map(lambda a: a.shape, shapes[False]) == jax.tree.map(lambda a: a.shape, shapes[True])
  assert "remat" in jaxprs[True] or "checkpoint" in jaxprs[True]
  assert "remat" not in jaxprs[False] and "checkpoint" not in jaxprs[False]


@pytest.mark.slow
# The numbers, in the long tier for every U-Net (30 s of compiling each): the suite checks every
# U-Net's remat wiring above by tracing, and DiT's numbers (tests/test_latent.py).
@pytest.mark.long
@pytest.mark.parametrize("name", ["edm2", "song_unet", "adm"])
def test_remat_keeps_parameters_outputs_and_gradients(name):
  plain, remat = NETS[name](), NETS[name](remat=True)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  c = jnp.array([0.1, -0.4])
  labels = {} if name == "song_unet" else {"class_labels": jnp.array([0, 2])}
  init = lambda m: jax.jit(lambda k: m.init(k, x, c, **labels)["params"])(jax.random.key(1))
  p_plain, p_remat = init(plain), init(remat)
  assert jax.tree.structure(p_plain) == jax.tree.structure(p_remat)  # same names
  for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_remat)):
    np.testing.assert_array_equal(a, b)
  leaves, tree = jax.tree.flatten(p_plain)  # off the zero-initialised outputs: gradients flow
  keys = jax.random.split(jax.random.key(2), len(leaves))
  params = jax.tree.unflatten(tree, [a + 0.1 * jax.random.normal(k, a.shape)
                                     for a, k in zip(leaves, keys)])

  def loss(model, p):
    out = model.apply({"params": p}, x, c, train=True, rngs={"dropout": jax.random.key(3)},
                      **labels)
    return jnp.sum(out ** 2)
  grads = {}
  for tag, model in (("plain", plain), ("remat", remat)):
    grads[tag] = jax.jit(jax.value_and_grad(lambda p, m=model: loss(m, p)))(params)
  (l0, g0), (l1, g1) = grads["plain"], grads["remat"]
  np.testing.assert_allclose(float(l0), float(l1), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):  # recomputed: float order may differ
    assert float(jnp.linalg.norm(a - b)) <= 1e-5 * float(jnp.linalg.norm(a)) + 1e-7
  assert float(sum(jnp.abs(a).sum() for a in jax.tree.leaves(g0))) > 0
  # with remat the backward pass recomputes the blocks: a checkpoint (remat) appears in its jaxpr
  jaxpr = str(jax.make_jaxpr(jax.grad(lambda p: loss(remat, p)))(params))
  assert "remat" in jaxpr or "checkpoint" in jaxpr


def test_a_resumed_run_may_switch_remat():
  assert is_resumable("model.remat") and not is_resumable("model.dropout")
