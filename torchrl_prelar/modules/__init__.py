"""PreLAR modules: latent action model, action encoder, pixel networks, world model."""

from torchrl_prelar.modules.latent_action import ActionEncoder, LatentActionModel
from torchrl_prelar.modules.networks import (
    ResNetDecoder,
    ResNetEncoder,
    make_conv_decoder,
    make_conv_encoder,
)
from torchrl_prelar.modules.world_model import (
    PreLARWorldModel,
    make_action_encoder,
    make_latent_action_model,
    make_pixel_decoder,
    make_pixel_encoder,
    make_reward_head,
    make_rssm_rollout,
    make_world_model,
    resolve_world_model_kwargs,
)

__all__ = [
    "ActionEncoder",
    "LatentActionModel",
    "PreLARWorldModel",
    "ResNetDecoder",
    "ResNetEncoder",
    "make_action_encoder",
    "make_conv_decoder",
    "make_conv_encoder",
    "make_latent_action_model",
    "make_pixel_decoder",
    "make_pixel_encoder",
    "make_reward_head",
    "make_rssm_rollout",
    "make_world_model",
    "resolve_world_model_kwargs",
]
