"""The discrete consistency loss shared by CD, CT and iCT (Song et al. 2023, Eq. 7 and 10):

  loss = lambda(t_n) d(f_theta(x_{n+1}, t_{n+1}), f_theta-(x_hat_n, t_n)),

the student at the larger noise level t_{n+1}, the stop-gradient target theta- at t_n. How
x_hat_n is made (a teacher ODE step or the same noise), which theta- (an EMA target or the
online parameters) and lambda differ per method; this function is the part they share.
"""
from __future__ import annotations

import jax

Array = jax.Array


def consistency_pair_distance(model_fn, params, target_params, x_hi: Array, t_hi: Array,
                              x_lo: Array, t_lo: Array, dropout_keys: Array, distance) -> Array:
  """d(f_params(x_hi, t_hi), stopgrad f_target(x_lo, t_lo)) per example.

  Args:
    model_fn: consistency function f(params, x (B, ...), t (B,), dropout_keys (B,)).
    params: the student's (online) parameters; gradients flow through this pass only.
    target_params: theta- (the same pytree as params, or params themselves for iCT/ECT).
    x_hi, t_hi: (B, ...) and (B,) student input at the larger noise level t_{n+1}.
    x_lo, t_lo: (B, ...) and (B,) target input at t_n (t_n >= sigma_min).
    dropout_keys: (B,) keys; the SAME keys in both passes, so the pair differs only in its
      input (matched dropout, as in iCT/ECT).
    distance: d(a, b) -> (B,).
  Returns:
    (B,) distances.
  """
  f_hi = model_fn(params, x_hi, t_hi, dropout_keys)
  f_lo = jax.lax.stop_gradient(model_fn(target_params, x_lo, t_lo, dropout_keys))
  return distance(f_hi, f_lo)
