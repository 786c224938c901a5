"""End-of-run evaluation of a trained model on the run's data set (digits-FD or 2-D metrics)."""
from __future__ import annotations

import os

from cmjax.images import save_grid


def is_toy2d(data_name: str) -> bool:
  return data_name.startswith("toy2d_")


def save_samples_picture(images, path: str, data_name: str, rows: int) -> None:
  """A PNG of samples: a grid of images, or a scatter plot over the true density for 2-D data."""
  if is_toy2d(data_name):
    import numpy as np
    from cmjax.data.toy2d import sample_toy2d
    from cmjax.evaluation.toy2d_metrics import save_scatter_png
    ref = sample_toy2d(data_name[len("toy2d_"):], 4000, np.random.default_rng(12345))
    save_scatter_png(images[:4000], path, reference=ref)
  else:
    save_grid(images, path, rows)


def evaluate(run, params, workdir: str, is_main: bool = True) -> dict:
  """Metrics of `params` with each of the run's samplers (`run.named_samplers`).

  digits: fd_digits_<sampler> (and the real-vs-real floor fd_digits_data).
  other image data (cifar10, imagenet64, folder): no metric here, only the sample grids (FID
  needs Inception weights and a reference: `--mode eval` with eval.fid_weights).
  toy2d_*: swd_<sampler> (sliced Wasserstein-1 to exact samples), modes_covered_<sampler>
  (fraction of the 8 modes) and near_modes_<sampler> (share of samples near a mode); for
  toy2d_gmm8 also consistency_error_{small,medium,large} (`evaluation.consistency_error`).
  Every process samples; process 0 writes WORKDIR/samples_<sampler>.png.
  """
  c = run.config
  data = c.data.name
  out = {}
  metric = data == "digits" or is_toy2d(data)
  for name, spec in run.named_samplers:
    imgs = run.generate(params, c.eval.num_samples if metric else c.eval.grid_rows ** 2, spec)
    if not metric:
      pass
    elif is_toy2d(data):
      from cmjax.evaluation.toy2d_metrics import toy2d_metrics
      m = toy2d_metrics(imgs, data[len("toy2d_"):])
      out.update({f"swd_{name}": m["swd"], f"modes_covered_{name}": m["modes_covered"],
                  f"near_modes_{name}": m["near_modes"]})
    else:
      from cmjax.evaluation import digits_fd
      out[f"fd_digits_{name}"] = float(digits_fd(imgs))
    if is_main:
      save_samples_picture(imgs, os.path.join(workdir, f"samples_{name}.png"), data, c.eval.grid_rows)
  if data == "toy2d_gmm8":  # the exact consistency function is known: measure the distance to it
    from cmjax.evaluation.consistency_error import consistency_errors, model_consistency_fn
    from cmjax.exact_gmm import gmm8
    fn = model_consistency_fn(run.model_fn, run.objective.parametrization, run.diffusion,
                              c.param, c.eval.ode_steps)
    out.update(consistency_errors(fn, params, gmm8(), seed=c.seed))
  if data == "digits":
    from cmjax.evaluation import digits_fd_data_floor
    out["fd_digits_data"] = float(digits_fd_data_floor())
  out["eval_num_samples"] = int(c.eval.num_samples) if metric else 0
  out["samplers"] = {name: list(spec) for name, spec in run.named_samplers}
  return out
