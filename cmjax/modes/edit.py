"""`--mode edit`: zero-shot editing of images with a trained run (`cmjax.editing`).

Inputs are held-out images of the run's data set ('0:16', '3,5,7') or image files (PNG/JPEG,
converted to the run's image shape). Writes WORKDIR/edits/<task>.png (one column per input; rows:
original, what the model sees, the edit; interpolation: one row per pair of noises) and
WORKDIR/edits/<task>.npz (uint8 arrays of each row).
"""
from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np

from cmjax import editing
from cmjax.builders import build
from cmjax.data import image_shape
from cmjax.data.digits import load_digits_split
from cmjax.errors import ConfigError, DataError
from cmjax.images import load_image_resized, save_grid, to_uint8
from cmjax.models import num_classes
from cmjax.modes.common import restore_params


def parse_inputs(spec: str) -> list:
  """'0:16' -> range(0, 16); '3,5,7' -> [3, 5, 7]; 'a.png,b.png' -> ['a.png', 'b.png']."""
  spec = spec.strip()
  m = re.fullmatch(r"(\d+):(\d+)", spec)
  if m:
    lo, hi = int(m.group(1)), int(m.group(2))
    if hi <= lo:
      raise ConfigError(f"edit.inputs={spec!r} is an empty range (start:stop needs stop > start, "
                        f"e.g. '{lo}:{lo + 8}')")
    return list(range(lo, hi))
  items = [v.strip() for v in spec.split(",") if v.strip()]
  if not items:
    raise ConfigError("edit.inputs is empty; give held-out indices ('0:16', '3,5') or image files")
  if all(v.isdigit() for v in items):
    return [int(v) for v in items]
  return items


def load_image_file(path: str, shape) -> np.ndarray:
  """An image file -> (H, W, C) float32 in [-1, 1] of the run's shape (decoded by its bit depth,
  converted to grey or RGB, resized; `cmjax.images.load_image_resized`). Raises ConfigError naming
  a missing or unreadable file."""
  try:
    return load_image_resized(path, shape) * 2.0 - 1.0
  except DataError as e:
    raise ConfigError(f"edit.inputs: {e}") from None


def load_inputs(config, shape) -> np.ndarray:
  """(N, H, W, C) reference images named by edit.inputs."""
  items = parse_inputs(config.edit.inputs)
  if isinstance(items[0], int):
    if config.data.name != "digits":
      raise ConfigError(f"edit.inputs as indices needs an image data set; data is {config.data.name}")
    held = load_digits_split("heldout")
    bad = [i for i in items if i >= len(held)]
    if bad:
      raise ConfigError(f"edit.inputs: held-out index {bad[0]} out of range (there are {len(held)})")
    return held[np.asarray(items)]
  return np.stack([load_image_file(p, shape) for p in items])


def build_operator(config, shape) -> editing.Operator:
  """The task's operator (inpaint, colorize, superres), checked against the image shape."""
  e = config.edit
  h, w, _ = shape
  try:
    if e.task == "inpaint":
      op = editing.inpaint_operator(editing.inpaint_mask(e.mask, h, w))
    elif e.task == "colorize":
      op = editing.colorize_operator()
    else:
      op = editing.superres_operator(int(e.factor))
    editing.check_operator(op, shape)
  except ValueError as err:
    raise ConfigError(f"edit: {err}") from err
  return op


def check_edit_config(config, image_shape) -> None:
  """One-line ConfigErrors for edit.* before anything is compiled."""
  e = config.edit
  if e.task not in editing.TASKS:
    raise ConfigError(f"unknown edit.task {e.task!r}; known: {', '.join(editing.TASKS)}")
  if len(image_shape) != 3:
    raise ConfigError(f"--mode edit needs image data; {config.data.name} is not images")
  if num_classes(config.model):
    raise ConfigError("--mode edit supports unconditional models only (this model has "
                      f"model.label_dim={config.model.label_dim})")
  sig = [float(v) for v in e.sigmas]
  if not sig or any(b >= a for a, b in zip(sig, sig[1:])) or sig[-1] <= config.param.sigma_min \
      or sig[0] > config.param.sigma_max:
    raise ConfigError(f"edit.sigmas must decrease within ({config.param.sigma_min}, "
                      f"{config.param.sigma_max}], got {sig}")
  if e.task == "interpolate" and e.interp_steps < 2:
    raise ConfigError(f"edit.interp_steps must be >= 2, got {e.interp_steps}")
  if e.task == "sdedit" and e.corrupt_std < 0:
    raise ConfigError(f"edit.corrupt_std must be >= 0, got {e.corrupt_std}")


def edit(config, workdir: str) -> dict:
  """`--mode edit`; returns the paths written and, for tasks with a reference, the mean squared
  error of the edit and of what the model saw, against the originals."""
  if config.data.name == "latent":
    raise ConfigError("--mode edit works on pixel-space models; this run generates VAE latents "
                      "(data.name='latent'), whose edits would need the encoder in the loop")
  shape = image_shape(config)
  check_edit_config(config, shape)
  e = config.edit
  if e.task in ("inpaint", "colorize", "superres"):
    op = build_operator(config, shape)
  ys = load_inputs(config, shape) if e.task != "interpolate" else None
  workdir = os.path.abspath(workdir)
  built = build(config)
  step, params = restore_params(built, workdir, int(e.checkpoint), e.params)
  f = built.family.consistency_fn(built.model_fn, config.param, config.eval.ode_steps)
  sigmas = tuple(float(v) for v in e.sigmas)
  key = jax.random.fold_in(jax.random.key(config.seed), 1000 + int(e.seed))
  out = {"task": e.task, "step": step, "sigmas": list(sigmas)}
  if e.task == "interpolate":
    n = len(parse_inputs(e.inputs))
    k0, k1 = jax.random.split(key)
    z0 = jax.random.normal(k0, (n,) + shape)
    z1 = jax.random.normal(k1, (n,) + shape)
    alphas = np.linspace(0.0, 1.0, int(e.interp_steps))
    x = jax.jit(lambda p: editing.interpolate(f, p, z0, z1, alphas, sigmas[0]))(params)
    rows = np.asarray(jnp.swapaxes(x, 0, 1))                               # (pairs, A, H, W, C)
    arrays = {"interpolations": to_uint8(rows.reshape((-1,) + shape)).reshape(rows.shape)}
  else:
    y = jnp.asarray(ys, jnp.float32)
    if e.task == "sdedit":
      noise = jax.random.normal(jax.random.fold_in(key, 7), y.shape)
      seen = jnp.clip(y + float(e.corrupt_std) * noise, -1.0, 1.0)
      x = jax.jit(lambda p: editing.sdedit(f, p, seen, sigmas, key, config.param.sigma_min))(params)
    else:
      seen = op.observe(y)
      x = jax.jit(lambda p: editing.edit(f, p, y, op, sigmas, key, config.param.sigma_min))(params)
    x, seen = np.asarray(x), np.asarray(seen)
    rows = np.stack([np.asarray(ys), seen, x])                             # (3, N, H, W, C)
    arrays = {"original": to_uint8(ys), "observed": to_uint8(seen), "edited": to_uint8(x)}
    out["mse_edited"] = float(np.mean((x - ys) ** 2))
    out["mse_observed"] = float(np.mean((seen - ys) ** 2))
  base = os.path.join(workdir, "edits", e.task)
  if jax.process_index() == 0:
    _write(base, rows, arrays)
  out.update(png=base + ".png", npz=base + ".npz")
  extra = (f"; mean squared error to the originals {out['mse_edited']:.4f} (input "
           f"{out['mse_observed']:.4f})") if "mse_edited" in out else ""
  print(f"cmjax: wrote {base}.png and .npz ({e.task}, checkpoint {step}, sigmas {list(sigmas)}){extra}")
  return out


def _write(base: str, rows: np.ndarray, arrays: dict) -> None:
  """rows (R, N, H, W, C) in [-1, 1] -> a PNG grid (R rows of N images), arrays -> .npz."""
  os.makedirs(os.path.dirname(base), exist_ok=True)
  r, n = rows.shape[:2]
  save_grid(rows.reshape((r * n,) + rows.shape[2:]), base + ".png", r, cols=n)
  tmp = base + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, base + ".npz")
