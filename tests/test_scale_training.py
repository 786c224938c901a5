"""Training at scale: gradient accumulation, bf16 mixed precision, class labels through the step,
kimg durations and EDM's EMA half-life, and the logged norms."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cmjax import config_base, parallel, schedules
from cmjax.data.digits import load_digits_split
from cmjax.models.mlp import MLP
from cmjax.models.unet import UNet
from cmjax.objectives.cd import CDObjective
from cmjax.objectives.ect import ECTObjective
from cmjax.objectives.common import condition_on_labels
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner, make_model_fn
from cmjax.train_state import init_train_state
from cmjax.train_step import make_train_step

B = 16


def _setup(label_dim=0, dtype=None):
  model = UNet(channels=8, channel_mult=(1, 2), num_res_blocks=1, dropout=0.2, groups=4,
               label_dim=label_dim)
  opt = optax.adam(1e-3)
  model_fn = make_model_fn(model, ConsistencyPreconditioner(), dtype)
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 1), num_classes=label_dim)
  x, y = load_digits_split("train", with_labels=True)
  return model_fn, opt, state, {"image": x[:B], "label": y[:B]}


@pytest.mark.slow
def test_grad_accumulation_equals_whole_batch_on_8_devices():
  # An MLP with dropout on the flattened digits: the step's mechanics (per-example keys and
  # dropout masks across micro-batches, the averaging) are the network's business nowhere, and
  # it compiles in a fraction of the U-Net's time.
  model = MLP(hidden=32, depth=1, dropout=0.2)
  opt = optax.adam(1e-3)
  model_fn = make_model_fn(model, ConsistencyPreconditioner())
  state = init_train_state(model, opt, jax.random.key(0), (8, 8, 1))
  batch = {"image": load_digits_split("train")[:B]}
  obj = ECTObjective(q=2.0, stage_steps=1)
  mesh = parallel.make_data_mesh(jax.devices())
  rep = parallel.replicated(mesh)
  sh = (jax.tree.map(lambda _: rep, state), {"image": parallel.batch_sharding(mesh)}, rep)
  out = {}
  for k in (1, 2):
    step = jax.jit(make_train_step(model_fn, obj, opt, 0.9, grad_accum=k), in_shardings=sh)
    out[k] = step(state, parallel.global_batch(batch, mesh), jax.random.key(3))
  (s1, m1), (s2, m2) = out[1], out[2]
  np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
  np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-4)
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)
  # The norms are logged and consistent: the update is params_after - params_before.
  diff = jax.tree.map(lambda a, b: a - b, s1.params, state.params)
  np.testing.assert_allclose(float(m1["update_norm"]), float(optax.tree.norm(diff)), rtol=1e-4)
  np.testing.assert_allclose(float(m1["param_norm"]), float(optax.tree.norm(s1.params)), rtol=1e-5)


@pytest.mark.slow
def test_bf16_computes_in_bf16_with_fp32_master_params_and_loss():
  model_fn32, opt, state, batch = _setup()
  model_fn16, _, _, _ = _setup(dtype=jnp.bfloat16)
  state = state.replace(params=jax.tree.map(lambda p: p + 0.05, state.params))  # non-zero output
  x, t = jnp.asarray(batch["image"]), jnp.full((B,), 2.0)
  f32, f16 = jax.jit(model_fn32)(state.params, x, t), jax.jit(model_fn16)(state.params, x, t)
  assert f16.dtype == jnp.float32  # preconditioning and output in fp32
  rel = float(jnp.linalg.norm(f16 - f32) / jnp.linalg.norm(f32))
  assert 0 < rel < 2e-2, rel  # bf16 rounding: different, but close
  hlo = jax.jit(lambda p: model_fn16(p, x, t)).lower(state.params).as_text()
  assert "bf16" in hlo and "convolution" in hlo
  obj = ECTObjective(q=2.0, stage_steps=1)
  new, metrics = jax.jit(make_train_step(model_fn16, obj, opt, 0.9))(state, {"image": x},
                                                                      jax.random.key(1))
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(new.params))
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


@pytest.mark.slow
def test_labels_condition_the_model_the_step_and_a_teacher():
  model_fn, opt, state, batch = _setup(label_dim=10)
  x, t = jnp.asarray(batch["image"]), jnp.full((B,), 1.0)
  y = jnp.asarray(batch["label"])
  state = state.replace(params=jax.tree.map(lambda p: p + 0.05, state.params))  # non-zero output layer
  fn = jax.jit(model_fn)  # one program per call signature, not an eager U-Net op by op
  a, b = fn(state.params, x, t, labels=y), fn(state.params, x, t, labels=(y + 1) % 10)
  assert float(jnp.abs(a - b).max()) > 1e-4
  with pytest.raises(ValueError, match="class_labels"):
    fn(state.params, x, t)  # a conditional model without labels is an error, not zeros
  keys = jax.random.split(jax.random.key(0), B)  # per-example (vmapped) path gets labels too
  np.testing.assert_allclose(np.asarray(fn(state.params, x, t, keys, labels=y)),
                             np.asarray(fn(state.params, x, t, keys, labels=y)))
  seen = []
  teacher = lambda p, v, s, labels=None: (seen.append(labels), v)[1]  # noqa: E731
  obj = CDObjective(num_scales=4, teacher_fn=teacher)
  mf, obj_l = condition_on_labels(model_fn, obj, y)
  obj_l.teacher_fn(None, x, t)
  assert seen[-1] is y
  # The step trains on the batch's labels: different labels, different update.
  step = jax.jit(make_train_step(model_fn, ECTObjective(q=2.0, stage_steps=1), opt, 0.9))
  s1, _ = step(state, {"image": x, "label": y}, jax.random.key(2))
  s2, _ = step(state, {"image": x, "label": (y + 3) % 10}, jax.random.key(2))
  assert any(float(jnp.abs(p - q).max()) > 0 for p, q in zip(jax.tree.leaves(s1.params),
                                                              jax.tree.leaves(s2.params)))


def test_edm_halflife_ema_and_kimg_durations():
  ema = schedules.ema_decay_schedule(0.999, halflife_images=500_000, batch_size=512)
  np.testing.assert_allclose(float(ema(0)), 0.5 ** (512 / 500_000), rtol=1e-6)
  ramp = schedules.ema_decay_schedule(0.999, halflife_images=500_000, batch_size=512,
                                      rampup_ratio=0.05)
  assert float(ramp(0)) == 0.0  # EDM: at the first step the EMA is the parameters
  np.testing.assert_allclose(float(ramp(100)), 0.5 ** (512 / (0.05 * 100 * 512)), rtol=1e-5)
  np.testing.assert_allclose(float(ramp(10**6)), float(ema(10**6)), rtol=1e-6)
  c = config_base.get_config()
  c.train.update(batch_size=512, duration_kimg=200_000.0)
  c.optim.update(lr=1e-3, warmup_kimg=10_000.0)
  d = schedules.resolve_durations(c)
  assert d.num_steps == 390_625  # EDM CIFAR-10: 200 Mimg at batch 512
  np.testing.assert_allclose(d.warmup_steps, 10_000_000 / 512)
  np.testing.assert_allclose(float(d.lr_schedule(9765)), 1e-3 * 9765 / (10_000_000 / 512), rtol=1e-5)
  c.train.batch_size = 128  # the same kimg at another batch size: 4x the steps
  assert schedules.resolve_durations(c).num_steps == 1_562_500
  c.train.duration_kimg = 0.0
  assert schedules.resolve_durations(c).num_steps == c.train.num_steps


def test_teacher_denoiser_with_labels_signature():
  """A teacher built like the trainer's accepts labels (EDM denoiser of a conditional model)."""
  model = UNet(channels=8, channel_mult=(1,), num_res_blocks=1, groups=4, label_dim=3)
  fn = make_model_fn(model, EDMPreconditioner())
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jnp.zeros((1,)),
                      class_labels=jnp.zeros((1,), jnp.int32))["params"]
  out = fn(params, jnp.ones((2, 8, 8, 1)), jnp.ones((2,)), labels=jnp.array([0, 2]))
  assert out.shape == (2, 8, 8, 1)


@pytest.mark.slow
def test_init_workdir_starts_from_another_runs_ema_weights(tmp_path):
  """ECT tunes a pretrained EDM model: train.init_workdir loads that run's EMA parameters;
  another backbone is one clear error (dropout may differ: it has no weights)."""
  from cmjax import checkpointing
  from cmjax.config_validation import ConfigError, config_to_json_dict
  from cmjax.run import Run
  from configs import digits_ect, digits_edm

  teacher_cfg = digits_edm.get_config("smoke")
  state = Run(teacher_cfg).init_state()
  ema = jax.tree.map(lambda p: p + 0.25, state.ema_params)  # distinct from any fresh init
  ckpt = checkpointing.Checkpointer(str(tmp_path / "edm" / "checkpoints"))
  ckpt.save(3, state.replace(ema_params=ema), config_to_json_dict(teacher_cfg), {})
  ckpt.wait()
  ckpt.close()
  c = digits_ect.get_config("smoke")
  c.train.init_workdir = str(tmp_path / "edm")
  c.model.dropout = 0.3
  run = Run(c)
  assert run.init_step == 3
  for a, b in zip(jax.tree.leaves(run.init_state().params), jax.tree.leaves(ema)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  c.model.channels = 16
  with pytest.raises(ConfigError, match="needs the same backbone") as err:
    Run(c)
  assert "\n" not in str(err.value)


@pytest.mark.slow
def test_class_conditional_sampling_through_run():
  """Run.generate conditions each sample on a class drawn from the sampling key, or on
  class_label; the same class gives the same sample, another class another one."""
  from cmjax.run import Run
  from configs import digits_ect

  c = digits_ect.get_config("smoke")
  c.model.label_dim = 10
  c.eval.batch_size = 8
  run = Run(c)
  params = jax.tree.map(lambda p: p + 0.05, run.init_state().ema_params)  # non-zero output layer
  spec = run.named_samplers[0][1]
  drawn = run.sample_labels(8)
  assert drawn.shape == (8,) and len(set(drawn.tolist())) > 1 and drawn.max() < 10
  x_random = run.generate(params, 8, spec)
  x_fixed = run.generate(params, 8, spec, class_label=int(drawn[0]))
  x_other = run.generate(params, 8, spec, class_label=(int(drawn[0]) + 1) % 10)
  np.testing.assert_allclose(x_fixed[0], x_random[0], atol=1e-6)  # same noise, same class
  assert float(np.abs(x_other[0] - x_random[0]).max()) > 1e-4
  same = drawn == drawn[0]
  np.testing.assert_allclose(x_fixed[same], x_random[same], atol=1e-6)
  with pytest.raises(ValueError, match="not a class"):
    run.generate(params, 8, spec, class_label=10)
