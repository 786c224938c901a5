"""MeanFlow (Geng, Deng, Bai, Kolter, He, "Mean Flows for One-step Generative Modeling", 2025):
train the average velocity u(z_t, r, t) of the linear path (`cmjax.families.mean_flow`) from the
MeanFlow identity u = v - (t - r) d/dt u (Eq. 6), following the authors' PyTorch CIFAR-10 code
(Gsunshine/py-meanflow 1f6d72d, meanflow/models/meanflow.py `forward_with_loss` and
meanflow/models/time_sampler.py).

Per example (keys give t/r, the mask, e, dropout):
  (t, r)   two logit-normals, t = sigmoid(p_std_t n + p_mean_t), r = sigmoid(p_std_r n' + p_mean_r);
           'v0' (the paper): t, r = max, min, then r = t with probability 1 - ratio_r_neq_t;
           'v1' (the code's improved default): r = t with probability 1 - ratio_r_neq_t, then
           r = min(t, r);
  z_t = (1 - t) x + t e,  v_t = e - x,
  (u, du/dt) = jvp((z, r, t) -> u(z, r, t), (z_t, r, t), (v_t, 0, 1))      (Eq. 8, ONE jvp: the
           primal u is the trained prediction, so both share the dropout mask),
  u_tgt = sg(v_t - (t - r) du/dt)                                          (Eq. 10),
  err   = ||u - u_tgt||^2 summed over the example's dims,
  loss  = err / sg((err + norm_eps)^norm_p)                                (Sec. 4.3 adaptive
           loss weighting; p = 0.75 on CIFAR-10, norm_eps = 1e-3 [code: train_arg_parser.py]).
Equation and section numbers are the arXiv paper's as recalled [unverified]; every formula is
checked against the authors' code (tests/test_meanflow.py freezes its loss and gradients).
Class-conditional runs (the paper's Sec. 4.2 / App. B.1 guidance, as the authors' JAX ImageNet
code Gsunshine/meanflow d70cb55 meanflow.py `guidance_fn`, `cond_drop`, `forward`): with labels y
the z-tangent and the target use the guided velocity
  v_g = omega v_t + kappa u(z_t, t, t | y) + (1 - omega - kappa) u(z_t, t, t | null)
(no dropout, no gradient; omega = 1, kappa = 0 outside t in [cfg_t_start, cfg_t_end]); each example's
label is replaced by null (= num_classes: a zero one-hot for the U-Nets, DiT's extra class) with
probability class_dropout_prob, and its v_g by v_t. The objective then needs the batch's labels
and an unbound model_fn: `uses_labels = True` asks `condition_on_labels` (objectives/common.py) for
dataclasses.replace(objective, labels=labels) instead of binding them into model_fn.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from cmjax.families.mean_flow import MEAN_FLOW
from cmjax.objectives.common import (ObjectiveBase, bcast, per_example_dims, per_example_normal,
                                     require, split_keys)

Array = jax.Array

TR_SAMPLERS = ("v0", "v1")


def logit_normal(keys: Array, p_mean: float, p_std: float) -> Array:
  """sigmoid(p_mean + p_std n), n ~ N(0, 1) per key: (B,) keys -> (B,) in (0, 1)."""
  n = jax.vmap(lambda k: jax.random.normal(k, ()))(keys)
  return jax.nn.sigmoid(p_mean + p_std * n)


@dataclasses.dataclass(frozen=True)
class MeanFlowObjective(ObjectiveBase):
  """The MeanFlow loss. Defaults: the authors' improved CIFAR-10 recipe (cifar10_v1.sh)."""
  tr_sampler: str = "v1"
  p_mean_t: float = -0.6
  p_std_t: float = 1.6
  p_mean_r: float = -4.0
  p_std_r: float = 1.6
  ratio_r_neq_t: float = 0.75
  norm_p: float = 0.75
  norm_eps: float = 1e-3
  cfg_omega: float = 1.0
  cfg_kappa: float = 0.0
  cfg_t_start: float = 0.0
  cfg_t_end: float = 1.0
  class_dropout_prob: float = 0.0
  num_classes: int = 0
  labels: Optional[Array] = dataclasses.field(default=None, compare=False, repr=False)
  family = MEAN_FLOW
  uses_labels = True

  def __post_init__(self):
    require(self.tr_sampler in TR_SAMPLERS,
            f"tr_sampler {self.tr_sampler!r} is unknown; known: {TR_SAMPLERS}")
    require(self.p_std_t > 0, f"p_std_t must be positive, got {self.p_std_t}")
    require(self.p_std_r > 0, f"p_std_r must be positive, got {self.p_std_r}")
    require(0.0 <= self.ratio_r_neq_t <= 1.0,
            f"ratio_r_neq_t must be in [0, 1], got {self.ratio_r_neq_t}")
    require(self.norm_p >= 0, f"norm_p must be >= 0, got {self.norm_p}")
    require(self.norm_eps > 0, f"norm_eps must be positive, got {self.norm_eps}")
    require(0.0 <= self.class_dropout_prob < 1.0,
            f"class_dropout_prob must be in [0, 1), got {self.class_dropout_prob}")
    require(0.0 <= self.cfg_t_start <= self.cfg_t_end <= 1.0,
            f"cfg_t_start, cfg_t_end must satisfy 0 <= start <= end <= 1, got "
            f"({self.cfg_t_start}, {self.cfg_t_end})")
    require(self.num_classes >= 0, f"num_classes must be >= 0, got {self.num_classes}")
    guided = self.cfg_omega != 1.0 or self.cfg_kappa != 0.0 or self.class_dropout_prob > 0
    require(not guided or self.num_classes > 0,
            "num_classes must be the model's label_dim (the null class id) when guidance "
            "(cfg_omega != 1, cfg_kappa != 0 or class_dropout_prob > 0) is on")

  def sample_tr(self, keys: Array) -> tuple[Array, Array]:
    """(t (B,), r (B,)) with 0 < r <= t < 1 from (B,) keys (the code's sample_two_timesteps)."""
    kt, kr, km = split_keys(keys, 3)
    t = logit_normal(kt, self.p_mean_t, self.p_std_t)
    r = logit_normal(kr, self.p_mean_r, self.p_std_r)
    same = jax.vmap(lambda k: jax.random.uniform(k, ()))(km) < 1.0 - self.ratio_r_neq_t
    if self.tr_sampler == "v0":
      t, r = jnp.maximum(t, r), jnp.minimum(t, r)
      return t, jnp.where(same, t, r)
    r = jnp.where(same, t, r)
    return t, jnp.minimum(t, r)

  def adaptive_loss(self, err: Array) -> Array:
    """err / sg((err + norm_eps)^norm_p) for err (B,) the summed squared error (Sec. 4.3)."""
    return err / jax.lax.stop_gradient((err + self.norm_eps) ** self.norm_p)

  def loss_terms(self, u_fn, z: Array, v: Array, t: Array, r: Array) -> tuple[Array, Array]:
    """(loss (B,), err (B,)) of MeanFlow Eq. 8-10 at z_t (B, ...) with velocity v (B, ...) (v_t, or
    the guided v_g) and times t, r (B,). u_fn(z (B, ...), r (B,), t (B,)) -> u (B, ...); its
    derivative is taken with one jax.jvp along (v, dr/dt = 0, dt/dt = 1), whose primal output is
    the prediction that is trained."""
    u, dudt = jax.jvp(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    u_tgt = jax.lax.stop_gradient(v - bcast(t - r, z) * dudt)
    err = jnp.sum(jnp.square((u - u_tgt).reshape(z.shape[0], -1)), axis=-1)
    return self.adaptive_loss(err), err

  def guided_velocity(self, model_fn, params, z: Array, v: Array, t: Array, keys: Array):
    """(labels fed to the trained pass (B,), v_g (B, ...)) for self.labels (B,) ints: the guided
    velocity (module docstring) with class dropout from keys (B,)."""
    y = self.labels
    null = jnp.full_like(y, self.num_classes)
    v_g = v
    if self.cfg_omega != 1.0 or self.cfg_kappa != 0.0:
      inst = lambda lab: model_fn(params, z, t, None, labels=lab, t2=t)  # noqa: E731  u(z, t, t)
      window = (t >= self.cfg_t_start) & (t <= self.cfg_t_end)
      omega = jnp.where(window, self.cfg_omega, 1.0)
      kappa = jnp.where(window, self.cfg_kappa, 0.0)
      v_g = bcast(omega, v) * v + bcast(1.0 - omega - kappa, v) * inst(null)
      if self.cfg_kappa != 0.0:
        v_g = v_g + bcast(kappa, v) * inst(y)
      v_g = jax.lax.stop_gradient(v_g)
    drop = jax.vmap(lambda k: jax.random.uniform(k, ()))(keys) < self.class_dropout_prob
    return jnp.where(drop, null, y), jnp.where(bcast(drop, v), v, v_g)

  def __call__(self, model_fn, params, x: Array, keys: Array, step: Array, extra=None):
    """Per-example loss. model_fn(params, z (B, ...), t (B,), dropout_keys, [labels=,] t2=r) -> u;
    x: (B, ...) clean data; keys: (B,). Returns (loss (B,), {'t', 'r', 'mse', 'loss'} of (B,)),
    mse the unweighted ||u - u_tgt||^2 / D. The jvp pass is the trained pass: one dropout mask per
    example."""
    del step, extra
    tr_keys, e_keys, d_keys = split_keys(keys, 3)
    t, r = self.sample_tr(tr_keys)
    e = per_example_normal(e_keys, x.shape[1:])
    z = bcast(1.0 - t, x) * x + bcast(t, x) * e
    v = e - x
    if self.labels is None:
      u_fn = lambda z_, r_, t_: model_fn(params, z_, t_, d_keys, t2=r_)  # noqa: E731
    else:
      c_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(e_keys)
      y_in, v = self.guided_velocity(model_fn, params, z, v, t, c_keys)
      u_fn = lambda z_, r_, t_: model_fn(params, z_, t_, d_keys, labels=y_in, t2=r_)  # noqa: E731
    loss, err = self.loss_terms(u_fn, z, v, t, r)
    return loss, {"t": t, "r": r, "mse": err / per_example_dims(x), "loss": loss}


METHODS = {"meanflow": MeanFlowObjective}
