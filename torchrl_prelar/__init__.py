"""PreLAR (ECCV 2024) world-model pre-training with learnable action representations,
as TorchRL components."""

from torchrl_prelar.modules import (
    PRESETS,
    ActionEncoder,
    LatentActionModel,
    PreLARWorldModel,
    make_action_encoder,
    make_latent_action_model,
    make_world_model,
    world_model_config,
)
from torchrl_prelar.objectives import PreLARLoss

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "ActionEncoder",
    "LatentActionModel",
    "PreLARLoss",
    "PreLARWorldModel",
    "make_action_encoder",
    "make_latent_action_model",
    "make_world_model",
    "world_model_config",
]
