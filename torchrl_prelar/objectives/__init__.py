"""PreLAR objectives."""

from torchrl_prelar.objectives.finetune import FinetuneModelLoss
from torchrl_prelar.objectives.prelar import (
    PreLARLoss,
    categorical_kl_to_uniform,
    gaussian_kl_to_prior,
)
from torchrl_prelar.objectives.supervised import SupervisedLatentActionLoss

__all__ = [
    "FinetuneModelLoss",
    "PreLARLoss",
    "SupervisedLatentActionLoss",
    "categorical_kl_to_uniform",
    "gaussian_kl_to_prior",
]
