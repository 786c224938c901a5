"""End-of-run evaluation of a trained model (`evaluate`), through the evaluator of the data's
kind (`cmjax.evaluation.evaluators`)."""
from __future__ import annotations

import os

from cmjax.evaluation.evaluators import evaluator_for


def save_samples_picture(images, path: str, config, rows: int) -> None:
  """A PNG of samples: a grid of images, or a scatter plot over the true density for 2-D data."""
  evaluator_for(config).save_picture(images, path, rows)


def evaluate(built, sampler, params, workdir: str, is_main: bool = True) -> dict:
  """Metrics of `params` with each of the run's samplers (`built.named_samplers`).

  <metric>_<sampler> for the evaluator's summary keys (fd_digits for digits; swd, modes_covered,
  near_modes for 2-D data; none for other image data, whose grids are still written), then the
  evaluator's run metrics (fd_digits_data, the real-vs-real floor; consistency_error_{small,
  medium,large} on toy2d_gmm8), eval_num_samples and the samplers' specs.
  Every process samples; process 0 writes WORKDIR/samples_<sampler>.png.
  """
  c = built.config
  ev = evaluator_for(c)
  out = {}
  for name, spec in built.named_samplers:
    imgs = sampler.generate(params, c.eval.num_samples if ev.has_metric else c.eval.grid_rows ** 2,
                            spec)
    if ev.has_metric:
      m = ev.metrics(imgs)
      out.update({f"{k}_{name}": m[k] for k in ev.summary_keys})
    if is_main:
      ev.save_picture(imgs, os.path.join(workdir, f"samples_{name}.png"), c.eval.grid_rows)
  out.update(ev.run_metrics(built.family, built.model_fn, params))
  out["eval_num_samples"] = int(c.eval.num_samples) if ev.has_metric else 0
  out["samplers"] = {name: list(spec) for name, spec in built.named_samplers}
  return out
