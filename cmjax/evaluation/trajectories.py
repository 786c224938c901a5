"""`--mode trajectories`: exact PF-ODE trajectories of the 8-Gaussian mixture, and where a trained
model sends points along them (a consistency model should send every point of a trajectory to
its end).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image, ImageDraw

from cmjax.exact_gmm import gmm8, pf_ode

# One colour per trajectory (RGB).
_COLOURS = [(214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
            (23, 190, 207), (227, 119, 194), (140, 86, 75)]


def trajectory_points(fn, params, gmm, num: int = 6, sigma_start: float = 2.0, marks: int = 10,
                      seed: int = 0, sigma_end: float = 0.002):
  """Exact trajectories and the model's f along them.

  Args:
    fn: the model's consistency estimate fn(params, x (B, 2), sigma (B,)) (see
      a family's `consistency_fn`, `cmjax.families`).
    num: trajectories, started at x0 + sigma_start z with x0 from the mixture.
    marks: points per trajectory (log-spaced noise levels) where f is evaluated.
  Returns:
    dict with 'path' (S, num, 2) and 'sigma' (S, num) of the exact trajectories, 'end' (num, 2),
    'marks' (marks, num, 2) points on them, 'pred' (marks, num, 2) the model's f there and
    'mark_sigma' (marks, num).
  """
  rng = np.random.default_rng([seed, 11])
  x = gmm.sample(num, rng) + sigma_start * rng.standard_normal((num, 2))
  end, path, sig = pf_ode(gmm, x, sigma_start, sigma_end, steps=512, return_path=True)
  idx = np.unique(np.round(np.linspace(0, len(sig) - 2, marks)).astype(int))
  pts, levels = path[idx], sig[idx]
  flat = jnp.asarray(pts.reshape(-1, 2), jnp.float32)
  pred = np.asarray(jax.jit(fn)(params, flat, jnp.asarray(levels.reshape(-1), jnp.float32)))
  return {"path": path, "sigma": sig, "end": end, "marks": pts, "mark_sigma": levels,
          "pred": pred.reshape(pts.shape)}


def save_trajectories_png(traj: dict, path: str, reference: np.ndarray | None = None,
                          size: int = 640, extent: float = 3.0) -> None:
  """Draws the trajectories (thin lines), their ends (black rings), the marked points (small
  squares) and the model's f of each marked point (dots, same colour). PIL only."""

  img = Image.new("RGB", (size, size), (255, 255, 255))
  d = ImageDraw.Draw(img)
  to_px = lambda p: ((p[0] + extent) / (2 * extent) * (size - 1),
                     (extent - p[1]) / (2 * extent) * (size - 1))
  d.rectangle([0, 0, size - 1, size - 1], outline=(0, 0, 0))
  if reference is not None:
    for p in reference:
      x, y = to_px(p)
      d.point((x, y), fill=(190, 190, 190))
  for j in range(traj["path"].shape[1]):
    col = _COLOURS[j % len(_COLOURS)]
    d.line([to_px(p) for p in traj["path"][:, j]], fill=col, width=1)
    for p in traj["marks"][:, j]:
      x, y = to_px(p)
      d.rectangle([x - 2, y - 2, x + 2, y + 2], outline=col)
    for p in traj["pred"][:, j]:
      x, y = to_px(p)
      d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
    x, y = to_px(traj["end"][j])
    d.ellipse([x - 7, y - 7, x + 7, y + 7], outline=(0, 0, 0), width=2)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  img.save(path)


def write_trajectories(config, family, model_fn, params, workdir: str, is_main: bool = True) -> dict:
  """The trajectories picture WORKDIR/trajectories.png of a toy2d_gmm8 run; returns summary numbers
  (mean distance of the model's f to the trajectory end, over all marked points). family: the
  model's family (`cmjax.families`), whose consistency_fn maps it onto EDM coordinates."""
  c = config
  fn = family.consistency_fn(model_fn, c.param, c.eval.ode_steps)
  gmm = gmm8()
  traj = trajectory_points(fn, params, gmm, seed=c.seed)
  out_path = os.path.join(workdir, "trajectories.png")
  if is_main:
    ref = gmm.sample(3000, np.random.default_rng(12345))
    save_trajectories_png(traj, out_path, reference=ref)
  err = np.linalg.norm(traj["pred"] - traj["end"][None], axis=-1)
  return {"path": out_path, "mean_distance_to_end": float(err.mean()),
          "num_trajectories": int(traj["end"].shape[0]), "marks_per_trajectory": int(err.shape[0])}
