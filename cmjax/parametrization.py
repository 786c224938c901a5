"""Preconditioning: how a backbone network F becomes a denoiser or a consistency function.

The backbone knows nothing of noise levels: it maps (scaled input, c_noise) to an
output of the input's shape. The wrappers here add the skip connection and scalings.

* EDM (Karras et al. 2022, Table 1 / Eq. 7):
    D(x; s) = c_skip(s) x + c_out(s) F(c_in(s) x; c_noise(s)),
    c_skip = sd^2/(s^2+sd^2), c_out = s sd/sqrt(s^2+sd^2), c_in = 1/sqrt(s^2+sd^2),
    c_noise = ln(s)/4.
* Consistency models (Song et al. 2023, Appendix C, Eq. for c_skip/c_out):
    f(x, t) = c_skip(t) x + c_out(t) F(c_in(t) x; c_noise(t)),
    c_skip = sd^2/((t-eps)^2+sd^2), c_out = sd (t-eps)/sqrt(t^2+sd^2),
  so that f(x, eps) = x exactly (the boundary condition): c_skip(eps) = 1 and
  c_out(eps) = 0 in floating point, not just approximately.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from cmjax.arrays import bcast

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ConsistencyPreconditioner:
  """CM preconditioning with the exact boundary condition f(x, sigma_min) = x.

  Attributes:
    sigma_data: data standard deviation sd (0.5 for pixels in [-1, 1]).
    sigma_min: the boundary time eps (0.002 in the CM paper).
  """
  sigma_data: float = 0.5
  sigma_min: float = 0.002

  def coefficients(self, t: Array):
    """Returns (c_skip, c_out, c_in, c_noise), each shaped like t (any shape)."""
    sd, eps = self.sigma_data, self.sigma_min
    c_skip = sd**2 / ((t - eps) ** 2 + sd**2)
    c_out = sd * (t - eps) / jnp.sqrt(t**2 + sd**2)
    c_in = 1.0 / jnp.sqrt(t**2 + sd**2)
    c_noise = 0.25 * jnp.log(t)
    return c_skip, c_out, c_in, c_noise

  def __call__(self, net: Callable[[Array, Array], Array], x: Array, t: Array) -> Array:
    """f(x, t) = c_skip x + c_out F(c_in x, c_noise).

    Args:
      net: backbone, (x_in (B, H, W, C), c_noise (B,)) -> (B, H, W, C).
      x: noisy input (B, H, W, C).
      t: noise levels (B,), t >= sigma_min.
    """
    c_skip, c_out, c_in, c_noise = self.coefficients(t)
    out = net(x * bcast(c_in, x), c_noise)
    return bcast(c_skip, x) * x + bcast(c_out, x) * out.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class EDMPreconditioner:
  """EDM denoiser preconditioning D(x; s) (Karras et al. 2022, Table 1)."""
  sigma_data: float = 0.5

  def coefficients(self, s: Array):
    """Returns (c_skip, c_out, c_in, c_noise), each shaped like s."""
    sd = self.sigma_data
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / jnp.sqrt(s**2 + sd**2)
    c_in = 1.0 / jnp.sqrt(s**2 + sd**2)
    c_noise = 0.25 * jnp.log(s)
    return c_skip, c_out, c_in, c_noise

  def __call__(self, net, x: Array, s: Array) -> Array:
    """D(x; s) = c_skip x + c_out F(c_in x, c_noise) for x (B, H, W, C), s (B,) (EDM Eq. 7)."""
    c_skip, c_out, c_in, c_noise = self.coefficients(s)
    out = net(x * bcast(c_in, x), c_noise)
    return bcast(c_skip, x) * x + bcast(c_out, x) * out.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class TrigFlowPreconditioner:
  """TrigFlow network output F (sCM, Lu & Song 2024, Sec. 3 / Eq. 6-8).

  x_t = cos(t) x_0 + sin(t) z, z ~ N(0, sd^2 I), t in [0, pi/2]. The backbone sees
  x_t / sd and c_noise(t) = t and returns F, a velocity prediction in units of sd:
    diffusion: sd F(x_t / sd, t) ~ v_t = dx_t/dt = cos(t) z - sin(t) x_0,
    consistency function: f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t / sd, t)
  (`trigflow_consistency`), so f(x, 0) = x exactly. `__call__` returns F itself, because
  sCT/sCD need F and its time derivative (by `jax.jvp`).
  """
  sigma_data: float = 0.5

  def __call__(self, net, x: Array, t: Array) -> Array:
    """F(x_t / sd, t) for x (B, ...), t (B,) in [0, pi/2]."""
    return net(x / self.sigma_data, t).astype(x.dtype)


def trigflow_consistency(x: Array, t: Array, F: Array, sigma_data: float) -> Array:
  """f(x_t, t) = cos(t) x_t - sin(t) sd F (sCM Eq. 8): x (B, ...), t (B,), F like x."""
  return bcast(jnp.cos(t), x) * x - bcast(jnp.sin(t), x) * sigma_data * F


def make_model_fn(model, precond, compute_dtype=None) -> Callable:
  """Builds the function every objective and sampler calls.

  Returns `fn(params, x, t, dropout_keys=None, labels=None, t2=None, augment_labels=None)
  -> (B, H, W, C)`:
    params: the backbone's parameters (the 'params' collection).
    x: (B, H, W, C) noisy images; t: (B,) noise levels.
    dropout_keys: None for deterministic evaluation, or a (B,) array of PRNG keys,
      one per example. In training the backbone is vmapped over examples so each
      example's dropout mask depends only on its own key. This is what makes a
      step on a global batch give the same result however the batch is split
      over devices (jit+sharding, pmap, several hosts), and lets a student and a
      teacher pass share masks by passing the same keys.
    labels: None (unconditional) or (B,) int class labels, passed to the backbone as
      `class_labels` (class-conditional models, EDM's convention; one-hot inside).
    t2: None, or a (B,) second conditioning time (families with two times: MeanFlow's r, a
      shortcut model's step size); the preconditioner is then called as precond(net, x, t, t2)
      and passes the backbone `c_noise_2`.
    augment_labels: None, or (B, A) EDM augmentation labels of the (augmented) inputs, passed to
      the backbone as `augment_labels` (EDM's convention; None = not augmented, as at sampling).
  compute_dtype: None (float32) or jnp.bfloat16 for mixed precision: the parameters and the
    backbone's input are cast to it, so the backbone computes in bf16 while the master
    parameters (and their gradients), the preconditioning and the loss stay in float32; the
    backbone's output is cast back to x's dtype by the preconditioner.
  """
  cast = (lambda tree: tree) if compute_dtype is None else (
      lambda tree: jax.tree.map(lambda a: a.astype(compute_dtype)
                                if jnp.issubdtype(a.dtype, jnp.floating) else a, tree))

  def backbone(params, rngs, labels, train, augment=None):
    p = cast(params)
    kw = {} if labels is None else {"class_labels": labels}
    if augment is not None:
      kw["augment_labels"] = cast(augment)

    def net(x_in, c_noise, c_noise_2=None):
      extra = kw if c_noise_2 is None else {**kw, "c_noise_2": c_noise_2}
      return model.apply({"params": p}, cast(x_in), c_noise, train=train, rngs=rngs, **extra)
    return net

  def apply(net, x, t, t2):
    return precond(net, x, t) if t2 is None else precond(net, x, t, t2)

  def fn(params, x: Array, t: Array, dropout_keys: Optional[Array] = None,
         labels: Optional[Array] = None, t2: Optional[Array] = None,
         augment_labels: Optional[Array] = None) -> Array:
    if dropout_keys is None:
      return apply(backbone(params, None, labels, False, augment_labels), x, t, t2)

    def one(xi, ti, ki, yi, t2i, ai):
      y = None if yi is None else yi[None]
      t2b = None if t2i is None else t2i[None]
      a = None if ai is None else ai[None]
      return apply(backbone(params, {"dropout": ki}, y, True, a), xi[None], ti[None], t2b)[0]

    return jax.vmap(one)(x, t, dropout_keys, labels, t2, augment_labels)

  return fn


def bind_labels(fn: Callable, labels: Optional[Array], augment_labels: Optional[Array] = None) -> Callable:
  """fn(params, x, t, keys=None, t2=None, labels=labels) with (B,) class labels as the default and
  (B, A) augmentation labels fixed, so objectives and samplers that call fn(params, x, t[, keys])
  condition on them, and one that passes labels= (MeanFlow's guidance: the null class) still can
  (both None: fn itself)."""
  if labels is None and augment_labels is None:
    return fn
  bound = labels
  return lambda params, x, t, dropout_keys=None, t2=None, labels=bound: fn(
      params, x, t, dropout_keys, labels=labels, t2=t2, augment_labels=augment_labels)


PARAMETRIZATIONS = ("cm", "edm", "trigflow")


def build_preconditioner(kind: str, sigma_data: float = 0.5, sigma_min: float = 0.002):
  """'cm' (consistency function f with the boundary shift), 'edm' (denoiser D) or
  'trigflow' (network output F, see `TrigFlowPreconditioner`)."""
  if kind == "cm":
    return ConsistencyPreconditioner(sigma_data, sigma_min)
  if kind == "edm":
    return EDMPreconditioner(sigma_data)
  if kind == "trigflow":
    return TrigFlowPreconditioner(sigma_data)
  raise ValueError(f"unknown parametrization {kind!r}; known: {PARAMETRIZATIONS}")
