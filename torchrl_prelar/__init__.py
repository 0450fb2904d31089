"""PreLAR (ECCV 2024) world-model pre-training with learnable action representations,
as TorchRL components."""

from torchrl_prelar.data import VideoClipTransform, VideoExperienceReplay
from torchrl_prelar.modules import (
    ActionEncoder,
    LatentActionModel,
    PreLARWorldModel,
    make_action_encoder,
    make_latent_action_model,
    make_world_model,
    resolve_world_model_kwargs,
)
from torchrl_prelar.modules.intrinsic import VideoIntrinsicBonus
from torchrl_prelar.objectives import FinetuneModelLoss, PreLARLoss, SupervisedLatentActionLoss

__version__ = "0.1.0"

__all__ = [
    "ActionEncoder",
    "FinetuneModelLoss",
    "LatentActionModel",
    "PreLARLoss",
    "PreLARWorldModel",
    "SupervisedLatentActionLoss",
    "VideoClipTransform",
    "VideoExperienceReplay",
    "VideoIntrinsicBonus",
    "make_action_encoder",
    "make_latent_action_model",
    "make_metaworld_env",
    "make_world_model",
    "resolve_world_model_kwargs",
]


def __getattr__(name: str):
    """``make_metaworld_env`` imports Meta-world, so it is loaded on first use only."""
    if name == "make_metaworld_env":
        from torchrl_prelar.envs import make_metaworld_env

        return make_metaworld_env
    raise AttributeError(f"module 'torchrl_prelar' has no attribute {name!r}")
