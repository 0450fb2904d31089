"""PreLAR objectives."""

from torchrl_prelar.objectives.finetune import FinetuneModelLoss
from torchrl_prelar.objectives.prelar import (
    PreLARLoss,
    categorical_kl_to_uniform,
    gaussian_kl_to_prior,
)

__all__ = ["FinetuneModelLoss", "PreLARLoss", "categorical_kl_to_uniform", "gaussian_kl_to_prior"]
