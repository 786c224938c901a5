"""cmjax: consistency models in JAX/Flax.

The functional pieces a user composes in their own loop (see README, "Functional API").
"""
from cmjax.distances import l1, l2, l2_squared, pseudo_huber
from cmjax.evaluation import digits_fd, digits_fd_data_floor
from cmjax.models import build_model
from cmjax.models.unet import UNet
from cmjax.objectives import build_objective
from cmjax.objectives.ect import ECTObjective
from cmjax.parametrization import ConsistencyPreconditioner, EDMPreconditioner, make_model_fn
from cmjax.sampling import multistep_sample, sample_noise
from cmjax.schedules import (ect_decay_schedule, ect_mapping, ema_decay_schedule,
                             lognormal_noise_levels, warmup_constant_lr)
from cmjax.train_state import TrainState, build_optimizer, init_train_state
from cmjax.train_step import example_keys, make_train_step

__all__ = [
    "ConsistencyPreconditioner", "ECTObjective", "EDMPreconditioner", "TrainState", "UNet",
    "build_model", "build_objective", "build_optimizer", "digits_fd", "digits_fd_data_floor",
    "ect_decay_schedule", "ect_mapping", "ema_decay_schedule", "example_keys", "init_train_state",
    "l1", "l2", "l2_squared", "lognormal_noise_levels", "make_model_fn", "make_train_step",
    "multistep_sample", "pseudo_huber", "sample_noise", "warmup_constant_lr",
]
__version__ = "0.1.0"
