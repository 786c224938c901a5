"""Zero-shot editing with a consistency model (Song et al. 2023, Sec. 6 and Algorithm 4).

Every task is one invertible linear operator A with an orthogonal matrix (A^-1 = A^T) and a
binary mask Omega in A's coefficient space (1 = coefficient known from the reference y):

  y' = A^-1[(A y) * Omega]                        (unknown coefficients set to 0)
  x  = f(y' + t_1 z, t_1);  x = clip(x);  x = A^-1[(A y) * Omega + (A x) * (1 - Omega)]
  for n = 2..N:  x = f(x + sqrt(t_n^2 - eps^2) z_n, t_n);  clip;  the same replacement

  inpainting          A = I, Omega = the known pixels
  colourisation       A mixes RGB with an orthogonal 3x3 whose first column is (1,1,1)/sqrt(3):
                      the first coefficient is the (scaled) grey level; Omega keeps only it
  super-resolution    A maps each p x p patch (per channel) through an orthogonal p^2 x p^2 whose
                      first column is constant: the first coefficient is the (scaled) patch
                      mean, i.e. the low-resolution image; Omega keeps only it
The CM paper's code clips f's output to [-1, 1] before the replacement (here `clip=True`).
Interpolation (`slerp`, `interpolate`) and SDEdit-style denoising (`sdedit`) complete the set.
Noise of example i at step j comes from fold_in(fold_in(key, j), first_index + i), so an edit
does not depend on the batch it runs in. All functions are pure and jit-able for static sigmas.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cmjax.sampling import _per_example_noise

Array = jax.Array
TASKS = ("inpaint", "colorize", "superres", "interpolate", "sdedit")
MASKS = ("bottom", "top", "left", "right", "center", "checker")


def orthogonal_with_constant_first(n: int) -> np.ndarray:
  """(n, n) orthogonal matrix whose first column is the constant vector 1/sqrt(n) (QR of a
  matrix starting with it; sign fixed so the first column is positive)."""
  m = np.eye(n)
  m[:, 0] = 1.0 / math.sqrt(n)
  q = np.linalg.qr(m)[0]
  return q if q[:, 0].sum() > 0 else -q


@dataclasses.dataclass(frozen=True)
class Operator:
  """An orthogonal linear operator A on images (B, H, W, C) and its known-coefficient mask.

  kind: 'identity', 'colour' (3x3 channel mixing) or 'patch' (p x p patches); keep: the mask
  Omega, broadcastable against A x; matrix: the orthogonal matrix (unused for 'identity').
  """
  kind: str
  keep: np.ndarray
  matrix: np.ndarray | None = None
  patch: int = 1

  def forward(self, x: Array) -> Array:
    """A x: (B, H, W, C) -> coefficients ((B, H, W, C) or (B, H/p, W/p, C, p^2) for 'patch')."""
    if self.kind == "identity":
      return x
    q = jnp.asarray(self.matrix, x.dtype)
    if self.kind == "colour":
      return x @ q
    b, h, w, c = x.shape
    p = self.patch
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4).reshape(b, h // p, w // p, c, p * p)
    return x @ q

  def inverse(self, a: Array) -> Array:
    """A^-1 a = A^T a (A is orthogonal): coefficients -> (B, H, W, C)."""
    if self.kind == "identity":
      return a
    q = jnp.asarray(self.matrix, a.dtype)
    if self.kind == "colour":
      return a @ q.T
    b, hp, wp, c, _ = a.shape
    p = self.patch
    x = (a @ q.T).reshape(b, hp, wp, c, p, p).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, hp * p, wp * p, c)

  def replace(self, y_coeffs: Array, x: Array) -> Array:
    """A^-1[(A y) * Omega + (A x) * (1 - Omega)]: x with the known part of y put back."""
    keep = jnp.asarray(self.keep, x.dtype)
    return self.inverse(y_coeffs * keep + self.forward(x) * (1 - keep))

  def observe(self, y: Array) -> Array:
    """A^-1[(A y) * Omega]: what the edit sees of y (unknown coefficients zeroed)."""
    return self.inverse(self.forward(y) * jnp.asarray(self.keep, y.dtype))


def inpaint_mask(kind: str, height: int, width: int) -> np.ndarray:
  """(H, W, 1) float mask, 1 = known pixel: the named region is MISSING (to be inpainted).

  'bottom'/'top'/'left'/'right' halves, 'center' (the middle half in each direction) or
  'checker' (alternate 2x2 blocks)."""
  m = np.ones((height, width), np.float32)
  h2, w2 = height // 2, width // 2
  if kind == "bottom":
    m[h2:] = 0
  elif kind == "top":
    m[:h2] = 0
  elif kind == "left":
    m[:, :w2] = 0
  elif kind == "right":
    m[:, w2:] = 0
  elif kind == "center":
    m[height // 4: height - height // 4, width // 4: width - width // 4] = 0
  elif kind == "checker":
    yy, xx = np.meshgrid(np.arange(height) // 2, np.arange(width) // 2, indexing="ij")
    m[(yy + xx) % 2 == 1] = 0
  else:
    raise ValueError(f"unknown inpainting mask {kind!r}; known: {', '.join(MASKS)}")
  return m[..., None]


def inpaint_operator(mask: np.ndarray) -> Operator:
  """A = I with Omega = mask ((H, W, 1) or (H, W, C) or (B, H, W, C); 1 = known pixel)."""
  return Operator("identity", np.asarray(mask, np.float32))


def colorize_operator() -> Operator:
  """RGB -> (grey, two chroma) with an orthogonal 3x3; only the grey coefficient is known."""
  return Operator("colour", np.array([1.0, 0.0, 0.0], np.float32),
                  orthogonal_with_constant_first(3).astype(np.float32))


def superres_operator(factor: int) -> Operator:
  """Patches of factor x factor -> an orthogonal basis whose first vector is the patch mean
  (scaled by factor); only that coefficient (the low-resolution image) is known."""
  if factor < 2:
    raise ValueError(f"super-resolution factor must be >= 2, got {factor}")
  keep = np.zeros(factor * factor, np.float32)
  keep[0] = 1.0
  return Operator("patch", keep, orthogonal_with_constant_first(factor * factor).astype(np.float32),
                  factor)


def check_operator(op: Operator, image_shape: Sequence[int]) -> None:
  """One clear ValueError if `op` cannot act on images of shape (H, W, C)."""
  h, w, c = image_shape
  if op.kind == "colour" and c != 3:
    raise ValueError(f"colourisation needs RGB images (C = 3), not C = {c}")
  if op.kind == "patch" and (h % op.patch or w % op.patch):
    raise ValueError(f"super-resolution factor {op.patch} must divide the image size {h}x{w}")


def _denoise_chain(model_fn, params, x: Array, sigmas: Sequence[float], key: Array, sigma_min: float,
                   clip: bool, first_index, after=None) -> Array:
  """x (B, ...) -> for each t_j: x = f(x + s_j z_j, t_j), s_1 = t_1, s_j = sqrt(t_j^2 - eps^2);
  clipped to [-1, 1] if `clip`; then after(x) if given (the replacement of Alg. 4)."""
  if len(sigmas) == 0:
    raise ValueError("editing needs at least one noise level")
  b = x.shape[0]
  for j, s in enumerate(sigmas):
    scale = s if j == 0 else math.sqrt(max(s * s - sigma_min * sigma_min, 0.0))
    x = x + scale * _per_example_noise(key, j, first_index, x.shape, x.dtype)
    x = model_fn(params, x, jnp.full((b,), s, x.dtype))
    if clip:
      x = jnp.clip(x, -1.0, 1.0)
    if after is not None:
      x = after(x)
  return x


def edit(model_fn, params, y: Array, op: Operator, sigmas: Sequence[float], key: Array,
         sigma_min: float = 0.002, clip: bool = True, first_index=0) -> Array:
  """Multistep consistency editing (CM paper, Algorithm 4).

  Args:
    model_fn: f(params, x (B, H, W, C), sigma (B,)) -> (B, H, W, C).
    y: (B, H, W, C) reference images in [-1, 1]; only A y * Omega is used.
    op: the task's operator (`inpaint_operator`, `colorize_operator`, `superres_operator`).
    sigmas: decreasing noise levels t_1 > ... > t_N (t_1 = sigma_max for a full edit).
    key: PRNG key of the noises (per example and step, see the module docstring).
  Returns:
    (B, H, W, C) edited images; the known coefficients equal A y (exactly for inpainting, up
    to float rounding of A^T A otherwise).
  """
  y_coeffs = op.forward(y) * jnp.asarray(op.keep, y.dtype)
  return _denoise_chain(model_fn, params, op.observe(y), sigmas, key, sigma_min, clip, first_index,
                        after=lambda x: op.replace(y_coeffs, x))


def sdedit(model_fn, params, y: Array, sigmas: Sequence[float], key: Array, sigma_min: float = 0.002,
           clip: bool = True, first_index=0) -> Array:
  """SDEdit-style denoising (Meng et al. 2022) with a consistency model: x = f(y + t_1 z, t_1),
  then multistep consistency sampling down the rest of `sigmas` (CM paper Alg. 1 started at
  t_1 < T). y: (B, H, W, C) corrupted images; returns (B, H, W, C)."""
  return _denoise_chain(model_fn, params, y, sigmas, key, sigma_min, clip, first_index)


def slerp(z0: Array, z1: Array, alpha: Array) -> Array:
  """Spherical interpolation of two noises (B, ...) at alpha (A,) -> (A, B, ...): sin((1-a) w) /
  sin w z0 + sin(a w) / sin w z1, w the angle between the flattened z0 and z1."""
  a0, a1 = z0.reshape(z0.shape[0], -1), z1.reshape(z1.shape[0], -1)
  cos = jnp.sum(a0 * a1, -1) / (jnp.linalg.norm(a0, axis=-1) * jnp.linalg.norm(a1, axis=-1))
  w = jnp.arccos(jnp.clip(cos, -1.0, 1.0))                                       # (B,)
  al = jnp.asarray(alpha, z0.dtype).reshape(-1, 1)
  c0 = jnp.sin((1 - al) * w) / jnp.sin(w)                                        # (A, B)
  c1 = jnp.sin(al * w) / jnp.sin(w)
  ex = (slice(None), slice(None)) + (None,) * (z0.ndim - 1)
  return c0[ex] * z0[None] + c1[ex] * z1[None]


def interpolate(model_fn, params, z0: Array, z1: Array, alphas: Sequence[float],
                sigma_max: float = 80.0, clip: bool = True) -> Array:
  """1-step samples f(sigma_max slerp(z0, z1, a), sigma_max) for each a: (A, B, H, W, C)
  (CM paper Fig. 6, interpolation between two noises)."""
  z = slerp(z0, z1, jnp.asarray(alphas))
  a, b = z.shape[:2]
  x = model_fn(params, sigma_max * z.reshape((a * b,) + z.shape[2:]), jnp.full((a * b,), sigma_max, z.dtype))
  x = jnp.clip(x, -1.0, 1.0) if clip else x
  return x.reshape(z.shape)
