"""`--mode sample`: samples of a trained run with any list of noise levels, and the ternary search
of the 2-step middle noise level (as the CM paper chose t_mid).

Writes WORKDIR/samples/sample_<tag>.png and .npz (uint8 images (N, H, W, C), or float32 points
(N, 2) for 2-D data, with the checkpoint step, params, sampler spec and seed), and for the search
WORKDIR/t_mid_search.json.
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable

import jax
import numpy as np

from cmjax.config_validation import ConfigError
from cmjax.images import to_uint8
from cmjax.run_logging import write_json_atomic


def sampler_spec(config, parametrization: str, diffusion: bool, sigmas=None) -> tuple:
  """The sampler spec (`cmjax.samplers`) of `sample.*` (or of explicit `sigmas`).

  Consistency models: ('cm', sigmas) or ('trigflow_cm', times), by default one step from
  sigma_max (pi/2). Diffusion models: their ODE with `sample.ode_steps` (0: eval.ode_steps).
  Raises ConfigError (one line) for levels that are not decreasing or out of range.
  """
  s, p = config.sample, config.param
  if diffusion:
    if s.sigmas:
      raise ConfigError(f"sample.sigmas is for consistency models; method '{config.method}' is a "
                        f"diffusion model (set sample.ode_steps)")
    steps = int(s.ode_steps) or int(config.eval.ode_steps)
    if steps < 1:
      raise ConfigError(f"sample.ode_steps must be >= 1, got {steps}")
    return ("edm", steps, config.eval.ode_solver) if parametrization == "edm" else ("trigflow_ode", steps)
  levels = tuple(float(v) for v in (s.sigmas if sigmas is None else sigmas))
  trig = parametrization == "trigflow"
  top, low = (math.pi / 2, 0.0) if trig else (float(p.sigma_max), float(p.sigma_min))
  levels = levels or (top,)
  name = "TrigFlow times" if trig else "noise levels"
  if any(not (low < v <= top + 1e-9) for v in levels):
    raise ConfigError(f"sample.sigmas: {name} must lie in ({low:g}, {top:g}], got {list(levels)}")
  if any(b >= a for a, b in zip(levels, levels[1:])):
    raise ConfigError(f"sample.sigmas: {name} must decrease, got {list(levels)}")
  return ("trigflow_cm" if trig else "cm", levels)


def ternary_search(score: Callable[[float], float], lo: float, hi: float, iters: int,
                   log_scale: bool = True) -> tuple[float, list]:
  """Minimises a unimodal score over [lo, hi] by ternary search (in log space if log_scale).

  Each round scores two interior points and drops the outer third on the worse side; returns
  (the best point scored, [(point, score), ...] in the order scored). 2 * iters evaluations.
  Use the same samples' noise for every point (common random numbers), as `sample` does.
  """
  if not lo < hi or (log_scale and lo <= 0):
    raise ValueError(f"ternary search needs 0 < lo < hi (log scale), got [{lo}, {hi}]")
  fwd = (lambda v: math.log(v)) if log_scale else (lambda v: v)
  inv = (lambda u: math.exp(u)) if log_scale else (lambda u: u)
  a, b = fwd(lo), fwd(hi)
  history = []
  for _ in range(iters):
    m1, m2 = a + (b - a) / 3, b - (b - a) / 3
    s1, s2 = score(inv(m1)), score(inv(m2))
    history += [(inv(m1), s1), (inv(m2), s2)]
    if s1 <= s2:
      b = m2
    else:
      a = m1
  best = min(history, key=lambda h: h[1])
  return best[0], history


def sample_score(run, images) -> float:
  """Lower is better: digits-FD for digits, sliced Wasserstein-1 for 2-D data."""
  data = run.config.data.name
  if data.startswith("toy2d_"):
    from cmjax.evaluation.toy2d_metrics import toy2d_metrics
    return float(toy2d_metrics(images, data[len("toy2d_"):])["swd"])
  from cmjax.evaluation import digits_fd
  return float(digits_fd(images))


def sample(config, workdir: str) -> dict:
  """`--mode sample`; returns what it wrote (paths, step, spec, and the search if asked)."""
  from cmjax.evaluation.run_eval import save_samples_picture
  from cmjax.inference import restore_params
  from cmjax.trainer import Run

  s = config.sample
  if s.num < 1:
    raise ConfigError(f"sample.num must be >= 1, got {s.num}")
  classes = int(config.model.label_dim)
  if s.class_label >= 0 and s.class_label >= classes:
    raise ConfigError(f"sample.class_label={s.class_label} is not a class of this model "
                      f"(model.label_dim={classes}" + (", unconditional)" if not classes else ")"))
  if s.search_t_mid and (s.search_iters < 1 or s.search_num < 2 or not 0 < s.search_lo < s.search_hi):
    raise ConfigError("sample.search_*: need 0 < search_lo < search_hi, search_iters >= 1, "
                      "search_num >= 2")
  workdir = os.path.abspath(workdir)
  run = Run(config)
  spec = sampler_spec(config, run.objective.parametrization, run.diffusion)  # checked before compiling
  if s.search_t_mid:
    if run.diffusion:
      raise ConfigError("sample.search_t_mid is for consistency models (2-step sampling)")
    sampler_spec(config, run.objective.parametrization, False, (spec[1][0], s.search_hi))
  step, params = restore_params(run, workdir, int(s.checkpoint), s.params)
  is_main = jax.process_index() == 0
  out = {"step": step, "params": s.params, "spec": list(spec), "seed": int(s.seed)}
  imgs = run.generate(params, int(s.num), spec, seed_offset=int(s.seed),
                      class_label=int(s.class_label))
  labels = run.sample_labels(int(s.num), int(s.seed), int(s.class_label))
  tag = s.tag or f"step{step}_" + (f"{len(spec[1])}step" if spec[0] in ("cm", "trigflow_cm") else "ode")
  base = os.path.join(workdir, "samples", f"sample_{tag}")
  if is_main:
    os.makedirs(os.path.dirname(base), exist_ok=True)
    toy = config.data.name.startswith("toy2d_")
    arr = imgs.astype(np.float32) if toy else to_uint8(imgs)
    tmp = base + ".tmp.npz"
    np.savez(tmp, images=arr, labels=labels, step=step, seed=int(s.seed), params=s.params,
             spec=json.dumps(list(spec)))
    os.replace(tmp, base + ".npz")
    rows = max(1, min(int(math.isqrt(len(imgs))), 16))
    save_samples_picture(imgs, base + ".png", config.data.name, rows)
  out.update(png=base + ".png", npz=base + ".npz", num=int(s.num))
  print(f"cmjax: wrote {base}.png and .npz ({s.num} samples, checkpoint {step}, {s.params} params, "
        f"spec {spec})")
  if s.search_t_mid:
    first = spec[1][0]

    def score(t_mid):
      two = sampler_spec(config, run.objective.parametrization, False, (first, t_mid))
      return sample_score(run, run.generate(params, int(s.search_num), two, seed_offset=int(s.seed)))

    best, history = ternary_search(score, float(s.search_lo), float(s.search_hi), int(s.search_iters))
    out["search"] = {"best_t_mid": best, "first": first, "num_samples": int(s.search_num),
                     "scored": [{"t_mid": t, "score": v} for t, v in history], "step": step}
    if is_main:
      write_json_atomic(os.path.join(workdir, "t_mid_search.json"), out["search"])
    print(f"cmjax: ternary search of t_mid over [{s.search_lo}, {s.search_hi}]: best {best:.4g} "
          f"(score {min(v for _, v in history):.4g}; {len(history)} points; t_mid_search.json)")
  return out
