"""EDM2's preconditioning and uncertainty estimate (Karras et al. 2024, "Analyzing and Improving
the Training Dynamics of Diffusion Models", Sec. 2 / App. B.2, Eq. 21), after NVlabs/edm2
`training/networks_edm2.py` class Precond and `training/training_loop.py` class EDM2Loss
(commit 4bf8162).

EDM2's Precond = EDM's preconditioning (Karras et al. 2022, Table 1) of the U-Net
(`cmjax.models.edm2_unet.EDM2UNet`) + a log-variance head u(sigma) = logvar_linear(
logvar_fourier(ln(sigma) / 4)) that weights the loss:
  loss = lambda(sigma) / exp(u(sigma)) ||D(x + sigma n; sigma) - x||^2 + u(sigma) (per element),
  lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2.
In cmjax the backbone's params hold only the U-Net; the head is a separate small module
(`EDM2Logvar`) whose params a training objective keeps as aux params (like sCM's adaptive
weight). EDM2's `use_fp16` corresponds to `cmjax.parametrization.make_model_fn(compute_dtype=
jnp.bfloat16)`: the U-Net runs in low precision, the preconditioning and the head in float32.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from cmjax.models.edm2_layers import MPConv, MPFourier

Array = jax.Array


def _bcast(v: Array, x: Array) -> Array:
  """(B,) -> (B, 1, ..., 1) matching x's rank."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - v.ndim))


class EDM2Logvar(nn.Module):
  """EDM2's uncertainty head u: c_noise (B,) -> (B,) float32, u = MPConv(MPFourier(c_noise))
  (EDM2 Precond.logvar_fourier / logvar_linear, 'u(sigma) in Equation 21'), c_noise = ln(sigma)/4.
  Params: logvar_fourier/{freqs, phases} (buffers, not trained), logvar_linear/kernel
  (logvar_channels, 1)."""
  logvar_channels: int = 128

  @nn.compact
  def __call__(self, c_noise: Array) -> Array:
    if self.logvar_channels < 1:
      raise ValueError(f"logvar_channels must be >= 1, got {self.logvar_channels}")
    c = jnp.reshape(jnp.asarray(c_noise, jnp.float32), (-1,))
    return MPConv(1, 0, name="logvar_linear")(MPFourier(self.logvar_channels,
                                                        name="logvar_fourier")(c))[:, 0]


@dataclasses.dataclass(frozen=True)
class EDM2Preconditioner:
  """EDM2 Precond: D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (EDM Eq. 7, Table 1) and the
  log-variance u(sigma). Same protocol as `cmjax.parametrization.EDMPreconditioner`."""
  sigma_data: float = 0.5
  logvar_channels: int = 128

  def coefficients(self, sigma: Array):
    """(c_skip, c_out, c_in, c_noise), each shaped like sigma: sd^2 / (s^2 + sd^2),
    s sd / sqrt(s^2 + sd^2), 1 / sqrt(sd^2 + s^2), ln(s) / 4."""
    sd, s = self.sigma_data, jnp.asarray(sigma, jnp.float32)
    c_skip = sd**2 / (s**2 + sd**2)
    c_out = s * sd / jnp.sqrt(s**2 + sd**2)
    c_in = 1.0 / jnp.sqrt(sd**2 + s**2)
    c_noise = jnp.log(s) / 4
    return c_skip, c_out, c_in, c_noise

  def __call__(self, net, x: Array, sigma: Array) -> Array:
    """D(x; sigma) for x (B, H, W, C) float32, sigma (B,): net(c_in x, c_noise) is the U-Net
    (any dtype; its output is cast to x.dtype)."""
    c_skip, c_out, c_in, c_noise = self.coefficients(sigma)
    out = net(x * _bcast(c_in, x), c_noise)
    return _bcast(c_skip, x) * x + _bcast(c_out, x) * out.astype(x.dtype)

  def init_logvar(self, key: Array) -> dict:
    """Fresh `EDM2Logvar` params: N(0, 1) kernel, random Fourier buffers (EDM2's init)."""
    return EDM2Logvar(self.logvar_channels).init(key, jnp.zeros((1,)))["params"]

  def logvar(self, logvar_params: dict, sigma: Array) -> Array:
    """u(sigma) (B,) float32 for sigma (B,) (EDM2 Precond(return_logvar=True), Eq. 21)."""
    c_noise = self.coefficients(sigma)[3]
    return EDM2Logvar(self.logvar_channels).apply({"params": logvar_params}, c_noise)

  def loss(self, denoised: Array, clean: Array, sigma: Array, logvar: Array) -> Array:
    """EDM2Loss summed over each example's elements, (B,):
    sum_i [lambda(s) / exp(u) (D_i - x_i)^2 + u] = lambda(s) / exp(u) ||D - x||^2 + N u,
    lambda(s) = (s^2 + sd^2) / (s sd)^2, N = elements per example (EDM2 sums the per-element loss
    over the batch). denoised, clean: (B, ...); sigma, logvar: (B,)."""
    batch = (clean.shape[0],)
    if denoised.shape != clean.shape or sigma.shape != batch or logvar.shape != batch:
      raise ValueError(f"EDM2 loss needs denoised and clean of one shape and sigma, logvar of "
                       f"shape (B,); got {denoised.shape}, {clean.shape}, {sigma.shape}, "
                       f"{logvar.shape}")
    sd = self.sigma_data
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    sq = jnp.sum(jnp.square((denoised - clean).reshape(clean.shape[0], -1)), axis=-1)
    n = clean[0].size
    return weight / jnp.exp(logvar) * sq + n * logvar
