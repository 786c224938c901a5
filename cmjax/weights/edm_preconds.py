"""EDM's VP and VE preconditioners (Karras et al. 2022, Table 1; NVlabs/edm `training/networks.py`
VPPrecond / VEPrecond), and the preconditioner an imported EDM/ECT pickle asks for.

Same protocol as `cmjax.parametrization.EDMPreconditioner`:
`precond(net, x (B, H, W, C), sigma (B,)) -> D(x; sigma)`, with `net(x_in, c_noise)` the backbone,
D = c_skip x + c_out F(c_in x, c_noise):

  VP (Song et al. 2021, DDPM++):  c_skip = 1, c_out = -sigma, c_in = 1/sqrt(sigma^2 + 1),
      c_noise = (M - 1) sigma^-1(sigma), with sigma(t) = sqrt(exp(beta_d t^2/2 + beta_min t) - 1)
      and sigma^-1(s) = (sqrt(beta_min^2 + 2 beta_d ln(1 + s^2)) - beta_min) / beta_d.
  VE (Song et al. 2021, NCSN++):  c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2).
  EDM:  cmjax.parametrization.EDMPreconditioner (sigma_data from the file).
  ECT's ECMPrecond (locuslab/ect training/networks.py, eval mode, which is how a snapshot is
      sampled): c_skip = sd^2/((sigma - sigma_min)^2 + sd^2),
      c_out = (sigma - sigma_min) sd / sqrt(sigma^2 + sd^2), c_in = 1/sqrt(sigma^2 + sd^2),
      c_noise = ln(sigma)/4 -- exactly cmjax.parametrization.ConsistencyPreconditioner(sd,
      sigma_min), which is returned for it. (In training mode ECMPrecond uses EDM's c_skip/c_out.)
The float32 operation order follows EDM's code, so imported networks reproduce its outputs.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cmjax.arrays import bcast
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner
from cmjax.weights.safe_pickle import WeightsFileError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VPPreconditioner:
  """EDM's VPPrecond (Table 1, VP column); defaults are EDM's (beta_d 19.9, beta_min 0.1,
  M 1000, epsilon_t 1e-5)."""
  beta_d: float = 19.9
  beta_min: float = 0.1
  M: int = 1000
  epsilon_t: float = 1e-5

  def sigma(self, t: Array) -> Array:
    """sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), any shape."""
    return jnp.sqrt(jnp.exp(0.5 * self.beta_d * t**2 + self.beta_min * t) - 1)

  def sigma_inv(self, sigma: Array) -> Array:
    """t(sigma) = (sqrt(beta_min^2 + 2 beta_d ln(1 + sigma^2)) - beta_min) / beta_d."""
    return (jnp.sqrt(self.beta_min**2 + 2 * self.beta_d * jnp.log(1 + sigma**2))
            - self.beta_min) / self.beta_d

  @property
  def sigma_min(self) -> float:
    return float(self.sigma(jnp.float32(self.epsilon_t)))

  @property
  def sigma_max(self) -> float:
    return float(self.sigma(jnp.float32(1.0)))

  def __call__(self, net, x: Array, sigma: Array) -> Array:
    """D(x; sigma) = x - sigma F(x / sqrt(sigma^2 + 1), (M - 1) t(sigma)); x (B, H, W, C),
    sigma (B,)."""
    sigma = jnp.asarray(sigma, jnp.float32)
    c_in = 1 / jnp.sqrt(sigma**2 + 1)
    c_noise = (self.M - 1) * self.sigma_inv(sigma)
    out = net(x * bcast(c_in, x), c_noise)
    return x - bcast(sigma, x) * out.astype(x.dtype)


@dataclasses.dataclass(frozen=True)
class VEPreconditioner:
  """EDM's VEPrecond (Table 1, VE column); sigma_min/max (0.02, 100) are the supported range,
  recorded from the file but not used by D."""
  sigma_min: float = 0.02
  sigma_max: float = 100.0

  def __call__(self, net, x: Array, sigma: Array) -> Array:
    """D(x; sigma) = x + sigma F(x, ln(sigma / 2)); x (B, H, W, C), sigma (B,)."""
    sigma = jnp.asarray(sigma, jnp.float32)
    out = net(x, jnp.log(0.5 * sigma))
    return x + bcast(sigma, x) * out.astype(x.dtype)


def preconditioner_from(read):
  """The preconditioner recorded in an `EDMNetwork` (cmjax.weights.edm_pickle.read_edm_pickle):
  EDMPrecond and EDM2's Precond -> EDMPreconditioner(sigma_data) (EDM2's Precond computes EDM's
  c_skip, c_out, c_in and c_noise = ln(sigma) / 4 in the same float32 order), ECMPrecond -> ConsistencyPreconditioner(
  sigma_data, sigma_min), VPPrecond -> VPPreconditioner(beta_d, beta_min, M, epsilon_t),
  VEPrecond -> VEPreconditioner(sigma_min, sigma_max). Unknown classes: one-line error."""
  c, cls = read.precond_config, read.precond_class
  try:
    if cls in ("EDMPrecond", "Precond"):
      return EDMPreconditioner(float(c["sigma_data"]))
    if cls == "ECMPrecond":
      return ConsistencyPreconditioner(float(c["sigma_data"]), float(c["sigma_min"]))
    if cls == "VPPrecond":
      return VPPreconditioner(float(c["beta_d"]), float(c["beta_min"]), int(c["M"]),
                              float(c["epsilon_t"]))
    if cls == "VEPrecond":
      return VEPreconditioner(float(c["sigma_min"]), float(c["sigma_max"]))
  except KeyError as e:
    raise WeightsFileError(f"{read.path}: {cls} without its '{e.args[0]}' setting") from None
  raise WeightsFileError(f"{read.path}: unsupported preconditioner class '{cls}' (supported: "
                         f"EDMPrecond, ECMPrecond, VPPrecond, VEPrecond, Precond (EDM2))")
