"""PreLAR modules: latent action model, action encoder, pixel networks, world model."""

from torchrl_prelar.modules.latent_action import ActionEncoder, LatentActionModel
from torchrl_prelar.modules.networks import (
    ResNetDecoder,
    ResNetEncoder,
    make_conv_decoder,
    make_conv_encoder,
)
from torchrl_prelar.modules.world_model import (
    PRESETS,
    PreLARWorldModel,
    make_action_encoder,
    make_latent_action_model,
    make_reward_head,
    make_world_model,
    world_model_config,
)

__all__ = [
    "PRESETS",
    "ActionEncoder",
    "LatentActionModel",
    "PreLARWorldModel",
    "ResNetDecoder",
    "ResNetEncoder",
    "make_action_encoder",
    "make_conv_decoder",
    "make_conv_encoder",
    "make_latent_action_model",
    "make_reward_head",
    "make_world_model",
    "world_model_config",
]
