"""`--mode trajectories`: WORKDIR/trajectories.png of a toy2d_gmm8 run — exact PF-ODE trajectories
and where the trained model's f sends points along them (`cmjax.evaluation.trajectories`)."""
from __future__ import annotations

import os

import jax

from cmjax.builders import build
from cmjax.errors import ConfigError
from cmjax.evaluation.trajectories import write_trajectories
from cmjax.modes.common import restore_params


def trajectories(config, workdir: str) -> dict:
  """Draws the picture from the newest checkpoint's EMA params; returns and prints the mean
  distance of the model's f along each exact trajectory to the trajectory's end."""
  if config.data.name != "toy2d_gmm8":
    raise ConfigError(f"--mode trajectories needs data toy2d_gmm8 (exact trajectories), not "
                      f"{config.data.name}")
  workdir = os.path.abspath(workdir)
  built = build(config)
  step, params = restore_params(built, workdir)
  out = write_trajectories(config, built.family, built.model_fn, params, workdir,
                           jax.process_index() == 0)
  out["step"] = step
  print(f"cmjax: wrote {out['path']} (checkpoint {step}); mean distance of f to the trajectory end "
        f"{out['mean_distance_to_end']:.4f} over {out['num_trajectories']} trajectories x "
        f"{out['marks_per_trajectory']} points")
  return out
