"""Evaluators by data kind: the one path from samples to metrics, used by training's end
(`cmjax.trainer`), `--mode eval` and the t_mid search of `--mode sample`.

  images  digits: digits-FD of the samples against the train split (and, with precision_recall,
          improved precision/recall on the digits classifier's features); the run adds the
          real-vs-real floor fd_digits_data. Other image data (cifar10, imagenet64, folder): no
          offline metric (FID needs Inception weights: `--mode eval` with eval.fid_weights).
          Pictures: a grid.
  points  2-D data: sliced Wasserstein-1 to exact samples, modes covered, share near a mode; on
          the 8 Gaussians also the distance of the model's f to the true consistency function
          per noise bucket (`consistency_error`). Pictures: a scatter over the true density.

Each evaluator: `has_metric`, `metrics(samples) -> {name: float}`, `summary_keys` (the metrics a
training summary reports per sampler), `score(samples)` (lower is better, for searches),
`run_metrics(family, model_fn, params)` (metrics of the model rather than of a sampler) and
`save_picture(samples, path, rows)`.
"""
from __future__ import annotations

import numpy as np

from cmjax.data import data_kind
from cmjax.data.digits import load_digits_split
from cmjax.data.toy2d import sample_toy2d
from cmjax.evaluation.consistency_error import consistency_errors
from cmjax.evaluation.digits_classifier import digits_features
from cmjax.evaluation.digits_fd import digits_fd, digits_fd_data_floor
from cmjax.evaluation.flow_error import average_velocity_errors
from cmjax.evaluation.precision_recall import precision_recall
from cmjax.evaluation.toy2d_metrics import save_scatter_png, toy2d_metrics
from cmjax.exact_gmm import gmm8
from cmjax.images import save_grid


class ImageEvaluator:
  """Images: digits-FD (and precision/recall) for the digits, grids for every image data set."""
  kind = "images"
  summary_keys = ("fd_digits",)

  def __init__(self, config, precision_recall_k: int = 0):
    self.config = config
    self.has_metric = config.data.name == "digits"
    self.pr_k = int(precision_recall_k)
    self._train_features = None

  def metrics(self, samples: np.ndarray) -> dict:
    if not self.has_metric:
      return {}
    out = {"fd_digits": float(digits_fd(samples))}
    if self.pr_k:
      if self._train_features is None:  # the train split's features, once
        self._train_features = digits_features(load_digits_split("train"))
      pr = precision_recall(self._train_features, digits_features(samples), k=self.pr_k)
      out.update({f"digits_{k}": v for k, v in pr.items()})
    return out

  def score(self, samples: np.ndarray) -> float:
    return float(digits_fd(samples))

  def run_metrics(self, family, model_fn, params) -> dict:
    return {"fd_digits_data": float(digits_fd_data_floor())} if self.has_metric else {}

  def save_picture(self, samples: np.ndarray, path: str, rows: int) -> None:
    save_grid(samples, path, rows)


class PointsEvaluator:
  """2-D points: exact-sample metrics, and on toy2d_gmm8 the true consistency function."""
  kind = "points"
  summary_keys = ("swd", "modes_covered", "near_modes")
  has_metric = True

  def __init__(self, config, precision_recall_k: int = 0):
    del precision_recall_k
    self.config = config
    self.name = config.data.name[len("toy2d_"):]

  def metrics(self, samples: np.ndarray) -> dict:
    return toy2d_metrics(samples, self.name)

  def score(self, samples: np.ndarray) -> float:
    return float(toy2d_metrics(samples, self.name)["swd"])

  def run_metrics(self, family, model_fn, params) -> dict:
    """consistency_error_{small,medium,large} on the 8 Gaussians (the exact f* is known), and for
    the mean_flow family meanflow_error_{small,medium,large} (`cmjax.evaluation.flow_error`; named
    shortcut_error_* for method 'shortcut')."""
    if self.name != "gmm8":
      return {}
    c = self.config
    fn = family.consistency_fn(model_fn, c.param, c.eval.ode_steps)
    out = consistency_errors(fn, params, gmm8(), seed=c.seed)
    if family.name == "mean_flow":  # u against the exact average velocity u* per bucket of t - r
      out.update(average_velocity_errors(model_fn, params, gmm8(), seed=c.seed))
    if c.method == "shortcut":  # the same numbers, named by the shortcut's step size d = t - r
      out.update({"shortcut_error" + k[len("meanflow_error"):]: out.pop(k)
                  for k in [k for k in out if k.startswith("meanflow_error")]})
    return out

  def save_picture(self, samples: np.ndarray, path: str, rows: int) -> None:
    ref = sample_toy2d(self.name, 4000, np.random.default_rng(12345))
    save_scatter_png(samples[:4000], path, reference=ref)


EVALUATORS = {"images": ImageEvaluator, "points": PointsEvaluator,
              "latents": ImageEvaluator}  # latent samples reach it decoded to pixels (cmjax.sampler)


def evaluator_for(config, precision_recall_k: int = 0):
  """The evaluator of config.data's kind (`cmjax.data.data_kind`)."""
  return EVALUATORS[data_kind(config)](config, precision_recall_k)
