"""PreLAR objectives."""

from torchrl_prelar.objectives.prelar import (
    PreLARLoss,
    categorical_kl_to_uniform,
    gaussian_kl_to_prior,
)

__all__ = ["PreLARLoss", "categorical_kl_to_uniform", "gaussian_kl_to_prior"]
