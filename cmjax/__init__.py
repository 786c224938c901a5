"""cmjax: consistency models in JAX/Flax.

The functional pieces a user composes in their own loop (see README, "Functional API").
"""
from cmjax.distances import l1, l2, l2_squared, pseudo_huber
from cmjax.editing import (colorize_operator, edit, inpaint_mask, inpaint_operator, interpolate, sdedit,
                           slerp, superres_operator)
from cmjax.evaluation import digits_fd, digits_fd_data_floor
from cmjax.evaluation.precision_recall import precision_recall
from cmjax.evaluation.consistency_error import consistency_errors, model_consistency_fn
from cmjax.exact_gmm import GaussianMixture, consistency_function, gmm8, pf_ode
from cmjax.families import FAMILIES, Family, family_named
from cmjax.models import build_model
from cmjax.models.mlp import MLP
from cmjax.models.unet import UNet
from cmjax.objectives import OBJECTIVES, build_objective
from cmjax.objectives.cd import CDObjective
from cmjax.objectives.ct import CTObjective
from cmjax.objectives.ect import ECTObjective
from cmjax.objectives.edm import EDMObjective
from cmjax.objectives.fm import FMObjective
from cmjax.objectives.ict import ICTObjective
from cmjax.objectives.scm import SCMObjective
from cmjax.objectives.trigflow import TrigFlowObjective
from cmjax.parametrization import (ConsistencyPreconditioner, EDMPreconditioner,
                                   TrigFlowPreconditioner, build_preconditioner, make_model_fn,
                                   trigflow_consistency)
from cmjax.sampling import (edm_sample, edm_sigmas, multistep_sample, ode_step, sample_noise,
                            trigflow_multistep_sample, trigflow_ode_sample, trigflow_ode_times)
from cmjax.modes.sample import ternary_search
from cmjax.schedules import (ct_num_scales_schedule, ct_target_ema_schedule,
                             discrete_lognormal_logits, ect_decay_schedule, ect_mapping,
                             ema_decay_schedule, ict_num_scales_schedule, karras_sigmas,
                             linear_warmup, lognormal_noise_levels, trigflow_time,
                             trigflow_time_samples, warmup_constant_lr)
from cmjax.train_state import TrainState, build_optimizer, init_train_state
from cmjax.train_step import example_keys, make_train_step

__all__ = [
    "build_model", "build_objective", "FAMILIES", "Family", "family_named", "build_optimizer", "build_preconditioner", "CDObjective",
    "colorize_operator", "consistency_errors", "consistency_function", "ConsistencyPreconditioner",
    "ct_num_scales_schedule", "ct_target_ema_schedule", "CTObjective", "digits_fd",
    "digits_fd_data_floor", "discrete_lognormal_logits", "ect_decay_schedule", "ect_mapping",
    "ECTObjective", "edit", "edm_sample", "edm_sigmas", "EDMObjective", "EDMPreconditioner", "FMObjective",
    "ema_decay_schedule", "example_keys", "GaussianMixture", "gmm8", "ict_num_scales_schedule",
    "ICTObjective", "init_train_state", "inpaint_mask", "inpaint_operator", "interpolate",
    "karras_sigmas", "l1", "l2", "l2_squared", "linear_warmup", "lognormal_noise_levels",
    "make_model_fn", "make_train_step", "MLP", "model_consistency_fn", "multistep_sample",
    "OBJECTIVES", "ode_step", "pf_ode", "precision_recall", "pseudo_huber", "sample_noise",
    "SCMObjective", "sdedit", "slerp", "superres_operator", "ternary_search", "TrainState",
    "trigflow_consistency", "trigflow_multistep_sample", "trigflow_ode_sample",
    "trigflow_ode_times", "trigflow_time", "trigflow_time_samples", "TrigFlowObjective",
    "TrigFlowPreconditioner", "UNet", "warmup_constant_lr",
]
__version__ = "0.1.0"
