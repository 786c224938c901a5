"""`--mode sample`: samples of a trained run with any list of noise levels, and the ternary search
of the 2-step middle noise level (as the CM paper chose t_mid).

Writes WORKDIR/samples/sample_<tag>.png and .npz (uint8 images (N, H, W, C), or float32 points
(N, 2) for 2-D data, with the checkpoint step, params, sampler spec and seed), and for the search
WORKDIR/t_mid_search.json.

The .npz of image samples is also an ADM sample batch (guided-diffusion's and the CM code's
image_sample.py: `np.savez(path, arr, label_arr)`), so ADM's evaluations/evaluator.py reads it
as is: arr_0 the uint8 (N, H, W, 3) images (grey repeated to RGB; pixels round((x + 1) * 127.5)
clipped, as EDM; ADM's own sampler truncates instead) and, for class-conditional models, arr_1
the (N,) int64 labels. Every key holds a plain array (no pickle needed to read it).
"""
from __future__ import annotations

import json
import math
import os
from typing import Callable

import jax
import numpy as np

from cmjax.builders import build
from cmjax.errors import ConfigError
from cmjax.evaluation.evaluators import evaluator_for
from cmjax.images import to_uint8
from cmjax.models import num_classes
from cmjax.modes.common import inference_setup
from cmjax.run_logging import write_json_atomic


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


def sample_npz_arrays(samples: np.ndarray, labels: np.ndarray, data_kind: str,
                      conditional: bool) -> dict:
  """The arrays of a sample .npz (besides its metadata).

  samples: (N, H, W, C) float in [-1, 1] (C = 1 or 3), or (N, 2) points for data_kind 'points'.
  labels: (N,) int classes of a class-conditional model ((0,) otherwise).
  Returns {'images': uint8 (N, H, W, C) | float32 (N, 2), 'labels': labels} and, for images,
  'arr_0': uint8 (N, H, W, 3) (ADM's sample batch layout) and, when conditional, 'arr_1': (N,)
  int64 labels.
  """
  if data_kind == "points":
    return {"images": np.asarray(samples, np.float32), "labels": labels}
  u8 = to_uint8(samples)
  out = {"images": u8, "labels": labels, "arr_0": np.repeat(u8, 3, -1) if u8.shape[-1] == 1 else u8}
  if conditional:
    out["arr_1"] = np.asarray(labels, np.int64)
  return out


def default_tag(step: int, is_diffusion: bool, spec, seed: int, params: str) -> str:
  """The file name tag of `--mode sample` without sample.tag: 'step{N}_{k}step' ('ode' for a
  diffusion model; 'imported_' instead of 'step{N}_' for a network file), then '_seed{S}' when
  seed != 0 and '_raw' for the online parameters, e.g. 'step400_2step_seed3'."""
  where = f"step{step}_" if step >= 0 else "imported_"
  tag = where + ("ode" if is_diffusion else f"{len(spec[1])}step")
  return tag + (f"_seed{seed}" if seed else "") + ("_raw" if params == "raw" else "")


def check_no_other_samples(path: str, step: int, spec, seed: int, params: str) -> None:
  """Raises ConfigError (one line) when `path` (a sample .npz) already holds samples of another
  checkpoint, sampler spec, seed or params, so a default-named run never silently replaces them;
  the same request again may overwrite. An unreadable file is refused too (it is not ours)."""
  if not os.path.exists(path):
    return
  try:
    with np.load(path, allow_pickle=False) as z:
      old = {"step": int(z["step"]), "seed": int(z["seed"]), "params": str(z["params"]),
             "spec": json.loads(str(z["spec"]))}
  except Exception as e:  # noqa: BLE001 - not a sample file of ours
    raise ConfigError(f"{path} exists and is not a readable sample file ({type(e).__name__}); "
                      f"move it away or set sample.tag") from None
  new = {"step": step, "seed": seed, "params": params, "spec": json.loads(json.dumps(list(spec)))}
  diff = [f"{k} {old[k]!r} (now {new[k]!r})" for k in ("step", "spec", "seed", "params")
          if old[k] != new[k]]
  if diff:
    raise ConfigError(f"{path} holds samples of another request ({'; '.join(diff)}); set "
                      f"sample.tag=NAME to write another file, or move it away")


def sample(config, workdir: str) -> dict:
  """`--mode sample`; returns what it wrote (paths, step, spec, and the search if asked)."""
  s = config.sample
  if s.num < 1:
    raise ConfigError(f"sample.num must be >= 1, got {s.num}")
  classes = num_classes(config.model)
  if s.class_label >= 0 and s.class_label >= classes:
    raise ConfigError(f"sample.class_label={s.class_label} is not a class of this model "
                      f"(model.label_dim={classes}" + (", unconditional)" if not classes else ")"))
  if s.search_t_mid and (s.search_iters < 1 or s.search_num < 2 or not 0 < s.search_lo < s.search_hi):
    raise ConfigError("sample.search_*: need 0 < search_lo < search_hi, search_iters >= 1, "
                      "search_num >= 2")
  workdir = os.path.abspath(workdir)
  built = build(config)  # validates before any file is read
  family = built.family
  spec = family.sampler_spec(config)  # checked before compiling
  if s.search_t_mid:
    if family.is_diffusion:
      raise ConfigError("sample.search_t_mid is for consistency models (2-step sampling)")
    top = family.level_range(config.param)[1]
    if not s.search_hi < top:
      raise ConfigError(f"sample.search_hi {s.search_hi} must be below the first level {top:g} "
                        f"(the {family.time_name} of family {family.name})")
    family.sampler_spec(config, (spec[1][0], s.search_hi))
  built, sampler, step, params = inference_setup(config, workdir, int(s.checkpoint), s.params,
                                                 s.weights, "sample.weights")
  is_main = jax.process_index() == 0
  out = {"step": step, "params": s.params, "spec": list(spec), "seed": int(s.seed)}
  tag = s.tag or default_tag(step, family.is_diffusion, spec, int(s.seed), s.params)
  base = os.path.join(workdir, "samples", f"sample_{tag}")
  if not s.tag:  # the default name never replaces samples of another spec, seed or checkpoint
    check_no_other_samples(base + ".npz", step, spec, int(s.seed), s.params)
  imgs = sampler.generate(params, int(s.num), spec, seed_offset=int(s.seed),
                          class_label=int(s.class_label))
  labels = sampler.sample_labels(int(s.num), int(s.seed), int(s.class_label))
  evaluator = evaluator_for(config)
  if is_main:
    os.makedirs(os.path.dirname(base), exist_ok=True)
    arrays = sample_npz_arrays(imgs, labels, built.data_kind, bool(classes))
    tmp = base + ".tmp.npz"
    np.savez(tmp, **arrays, step=step, seed=int(s.seed), params=s.params,
             spec=json.dumps(list(spec)))
    os.replace(tmp, base + ".npz")
    rows = max(1, min(int(math.isqrt(len(imgs))), 16))
    evaluator.save_picture(imgs, base + ".png", rows)
  out.update(png=base + ".png", npz=base + ".npz", num=int(s.num))
  print(f"cmjax: wrote {base}.png and .npz ({s.num} samples, checkpoint {step}, {s.params} params, "
        f"spec {spec})")
  if s.search_t_mid:
    first = spec[1][0]

    def score(t_mid):
      two = family.sampler_spec(config, (first, t_mid))
      return evaluator.score(sampler.generate(params, int(s.search_num), two,
                                              seed_offset=int(s.seed)))

    best, history = ternary_search(score, float(s.search_lo), float(s.search_hi), int(s.search_iters))
    out["search"] = {"best_t_mid": best, "first": first, "num_samples": int(s.search_num),
                     "scored": [{"t_mid": t, "score": v} for t, v in history], "step": step}
    if is_main:
      write_json_atomic(os.path.join(workdir, "t_mid_search.json"), out["search"])
    print(f"cmjax: ternary search of t_mid over [{s.search_lo}, {s.search_hi}]: best {best:.4g} "
          f"(score {min(v for _, v in history):.4g}; {len(history)} points; t_mid_search.json)")
  return out
