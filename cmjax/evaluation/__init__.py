"""Sample-quality evaluation: Fréchet distance and the offline digits-FD metric."""
from __future__ import annotations

from cmjax.evaluation.digits_classifier import digits_features
from cmjax.evaluation.digits_fd import digits_fd, digits_fd_data_floor
from cmjax.evaluation.frechet import feature_statistics, frechet_distance

__all__ = [
    "digits_features",
    "digits_fd",
    "digits_fd_data_floor",
    "feature_statistics",
    "frechet_distance",
]
