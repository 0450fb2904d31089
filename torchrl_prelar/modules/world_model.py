"""The PreLAR world model, assembled from TorchRL's DreamerV3 RSSM and PreLAR's networks.

The RSSM always reads its action from ``"latent_action"``; only the module that writes
that key changes between stages (:class:`~torchrl_prelar.modules.LatentActionModel` for
pre-training, :class:`~torchrl_prelar.modules.ActionEncoder` for fine-tuning).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from importlib import resources
from typing import Any

import torch
import yaml
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchrl.modules import MLP, RSSMPosteriorV3, RSSMPriorV3, RSSMRolloutV3

from torchrl_prelar.modules.latent_action import (
    EMBEDDING_MODES,
    ActionEncoder,
    EmbeddingPair,
    LatentActionModel,
    latent_action_trunk_channels,
    use_circular_padding,
)
from torchrl_prelar.modules.networks import (
    ResidualBlock,
    ResNetDecoder,
    ResNetEncoder,
    make_conv_decoder,
    make_conv_encoder,
)
from torchrl_prelar.modules.pixels import check_pixels

PRESETS = ("paper", "small", "tiny")


def _merge(base: dict, overrides: Mapping) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def world_model_config(preset: str | Mapping = "tiny", **overrides: Any) -> dict:
    """Return the world-model settings of a preset (``paper``, ``small``, ``tiny``).

    The presets live in ``torchrl_prelar/configs/world_model/<preset>.yaml``. A mapping is
    taken as a full configuration. ``overrides`` are merged in, nested mappings key by key.

    Examples:
        >>> world_model_config("tiny", rssm={"deter": 32})["rssm"]["deter"]
        32
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"Unknown world-model preset {preset!r}: expected one of {PRESETS}.")
        text = (
            resources.files("torchrl_prelar") / "configs" / "world_model" / f"{preset}.yaml"
        ).read_text()
        config = yaml.safe_load(text)
    else:
        config = _merge({}, preset)
    return _merge(config, overrides)


def _make_encoder(spec: Mapping, in_channels: int, image_size: int) -> nn.Module:
    if spec["type"] == "resnet":
        return ResNetEncoder(
            in_channels,
            tuple(spec["widths"]),
            spec["blocks_per_stage"],
            image_size,
            spec.get("pool", "flatten"),
        )
    if spec["type"] == "conv":
        return make_conv_encoder(
            in_channels,
            spec["depth"],
            tuple(spec["mults"]),
            image_size,
            spec.get("pool", "flatten"),
        )
    raise ValueError(f"Unknown encoder type {spec['type']!r}: expected 'resnet' or 'conv'.")


def _make_decoder(spec: Mapping, in_features: int, channels: int, image_size: int) -> nn.Module:
    if spec["type"] == "resnet":
        return ResNetDecoder(in_features, tuple(spec["widths"]), channels, image_size)
    if spec["type"] == "conv":
        return make_conv_decoder(
            in_features, spec["depth"], tuple(spec["mults"]), channels, image_size
        )
    raise ValueError(f"Unknown decoder type {spec['type']!r}: expected 'resnet' or 'conv'.")


def chain_in_keys(
    parts: list[TensorDictModuleBase], made_inside: set | None = None
) -> list[NestedKey]:
    """Keys a chain of modules reads that no earlier module of the chain writes.

    Examples:
        >>> first = TensorDictModule(nn.Identity(), in_keys=["a"], out_keys=["b"])
        >>> second = TensorDictModule(nn.Identity(), in_keys=["b", "c"], out_keys=["d"])
        >>> chain_in_keys([first, second])
        ['a', 'c']
    """
    keys: list[NestedKey] = []
    written = set(made_inside or ())
    for part in parts:
        keys += [key for key in part.in_keys if key not in written and key not in keys]
        written.update(part.out_keys)
    return keys


def set_zero_initial_state(
    tensordict: TensorDictBase, prior: RSSMPriorV3, device: torch.device
) -> None:
    """Supply a zero ``"state"`` / ``"belief"`` of ``prior``'s sizes where the batch has none."""
    sizes = {
        "state": prior.num_categoricals * prior.num_classes,
        "belief": prior.rnn_hidden_dim,
    }
    for key, size in sizes.items():
        if key not in tensordict.keys():
            zeros = torch.zeros((), device=device)
            tensordict.set(key, zeros.expand(*tensordict.batch_size, size))


def decode_states(
    decoder: TensorDictModule,
    inputs: TensorDictBase,
    state: torch.Tensor,
    belief: torch.Tensor,
) -> torch.Tensor:
    """Decode (e.g. imagined) ``state`` / ``belief``; the decoder's other inputs from ``inputs``.

    ``inputs`` is a world-model output with the batch size of ``state`` (e.g. one step of
    it): a decoder that reads more than the state (ContextWM's context maps) gets them there.

    Examples:
        >>> from tensordict import TensorDict
        >>> model = make_world_model("tiny")
        >>> decode_states(model.decoder, TensorDict({}, [2]), torch.zeros(2, 64),
        ...               torch.zeros(2, 64)).shape
        torch.Size([2, 3, 64, 64])
    """
    keys = [key for key in decoder.in_keys if key in inputs.keys(include_nested=True)]
    step = inputs.select(*keys)
    step.update({("next", "state"): state, ("next", "belief"): belief})
    return decoder(step).get(decoder.out_keys[0])


class PreLARWorldModel(TensorDictModuleBase):
    """Action-conditional Dreamer world model whose action is ``"latent_action"``.

    Runs, on a ``[*batch, T]`` TensorDict of TorchRL transitions:

    1. ``encoder``: ``("next", "pixels")`` -> ``("next", "encoded_latents")`` (and
       ``"encoded_latents"`` for o_t when the action model reads embeddings);
    2. ``action_model``: writes ``"latent_action"`` (a :class:`LatentActionModel` on video,
       an :class:`ActionEncoder` on real actions);
    3. ``rssm``: TorchRL's :class:`~torchrl.modules.RSSMRolloutV3` over time, resetting state,
       belief and action where ``"is_init"`` is set, writing ``("next", "prior_logits")``,
       ``("next", "posterior_logits")``, ``("next", "state")``, ``("next", "belief")``;
    4. ``decoder``: ``("next", "state"), ("next", "belief")`` -> ``("next", "reco_pixels")``;
    5. ``reward_heads`` (fine-tuning only): each writes a reward prediction from the state.

    Frames are read as they are given (uint8, or floats in [-0.5, 0.5]) and left so in the
    TensorDict: each network converts uint8 frames on the way in
    (:func:`~torchrl_prelar.modules.pixels.centred_pixels`). They are checked (key, shape,
    range, NaN) unless ``validate_inputs`` is off. A zero initial ``"state"`` / ``"belief"``
    is supplied when absent. Swap the action model by assignment:
    ``world_model.action_model = ActionEncoder(...)``. ``activation_checkpointing`` trades
    compute for memory: pixel-network activations are recomputed in backward instead of being
    stored (the preset key of the same name sets it).

    Examples:
        >>> from tensordict import TensorDict
        >>> model = make_world_model("tiny")
        >>> td = TensorDict({"pixels": torch.zeros(2, 4, 3, 64, 64, dtype=torch.uint8),
        ...                  "next": {"pixels": torch.zeros(2, 4, 3, 64, 64, dtype=torch.uint8)},
        ...                  "is_init": torch.zeros(2, 4, 1, dtype=torch.bool)}, [2, 4])
        >>> model(td)["next", "reco_pixels"].shape
        torch.Size([2, 4, 3, 64, 64])
    """

    def __init__(
        self,
        action_model: TensorDictModuleBase,
        encoder: TensorDictModule,
        rssm: RSSMRolloutV3,
        decoder: TensorDictModule,
        reward_heads: list[TensorDictModule] | None = None,
        *,
        image_shape: tuple[int, int, int] = (3, 64, 64),
        pixel_keys: tuple[NestedKey, NestedKey] = ("pixels", ("next", "pixels")),
        validate_inputs: bool = True,
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.action_model = action_model
        self.encoder = encoder
        self.rssm = rssm
        self.decoder = decoder
        self.reward_heads = nn.ModuleList(reward_heads or [])
        self.image_shape = tuple(image_shape)
        self.pixel_keys = list(pixel_keys)
        self.validate_inputs = validate_inputs
        self.activation_checkpointing = activation_checkpointing

    @property
    def activation_checkpointing(self) -> bool:
        """Recompute activations in backward instead of storing them (less memory).

        Residual blocks (``paper`` networks, latent action trunk included) are recomputed one
        block at a time; a pixel network without residual blocks (``small`` / ``tiny``) is
        recomputed as a whole. Parameter names and values do not change. BatchNorm running
        statistics see each recomputed batch a second time (one extra momentum step).
        """
        return self._activation_checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, enabled: bool) -> None:
        self._activation_checkpointing = bool(enabled)
        for module in self.modules():
            if isinstance(module, ResidualBlock):
                module.checkpointed = self._activation_checkpointing

    @property
    def _parts(self) -> list[TensorDictModuleBase]:
        return [self.encoder, self.action_model, self.rssm, self.decoder, *self.reward_heads]

    @property
    def in_keys(self) -> list[NestedKey]:
        # o_t embeddings ("encoded_latents") are made here when the action model asks for them.
        return chain_in_keys(self._parts, made_inside={"encoded_latents"})

    @property
    def out_keys(self) -> list[NestedKey]:
        return [key for part in self._parts for key in part.out_keys]

    @property
    def rssm_prior(self) -> RSSMPriorV3:
        """The prior network (GRU + prior head), e.g. for imagination."""
        return self.rssm.rssm_prior.module

    def _prepare(self, tensordict: TensorDictBase) -> None:
        if self.validate_inputs:
            for key in self.pixel_keys:
                check_pixels(tensordict, key, self.image_shape)
        set_zero_initial_state(tensordict, self.rssm_prior, tensordict.device or self._device())

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _embed_current_frames(self, tensordict: TensorDictBase) -> None:
        """Write ``"encoded_latents"`` (o_t) for an action model that reads embeddings.

        Within a clip o_t is o_{t-1}'s next frame, so only the first frame is encoded; the
        rest are the next-frame embeddings shifted by one step.
        """
        if "encoded_latents" not in self.action_model.in_keys:
            return
        if "encoded_latents" in tensordict.keys():
            return
        first = self.encoder.module(tensordict.get(self.pixel_keys[0])[..., :1, :, :, :])
        following = tensordict.get(("next", "encoded_latents"))[..., :-1, :]
        tensordict.set("encoded_latents", torch.cat([first, following], -2))

    def compile_networks(self, **compile_kwargs: Any) -> None:
        """``torch.compile`` each network in place (parameter names do not change).

        The pixel encoder and decoder, the RSSM prior and posterior networks, the action
        model's networks and the reward heads are compiled one by one; the TensorDict plumbing
        and the RSSM's loop over time stay eager, so each network compiles once for all steps.
        ``compile_kwargs`` go to :meth:`torch.nn.Module.compile` (e.g. ``mode``).
        """
        networks = [
            self.encoder.module,
            self.decoder.module,
            self.rssm_prior,
            self.rssm.rssm_posterior.module,
            *(  # the action model's networks, not its parameter-free TensorDict modules
                child
                for child in self.action_model.children()
                if not isinstance(child, TensorDictModuleBase)
            ),
            *(head.module for head in self.reward_heads),
        ]
        for network in networks:
            network.compile(**compile_kwargs)

    def _run_pixel_network(
        self, part: TensorDictModule, tensordict: TensorDictBase
    ) -> TensorDictBase:
        """Run the encoder or decoder; recompute it whole in backward if it has no blocks."""
        if not (self.activation_checkpointing and self.training and torch.is_grad_enabled()):
            return part(tensordict)
        if any(isinstance(module, ResidualBlock) for module in part.modules()):
            return part(tensordict)  # its residual blocks recompute themselves
        inputs = [tensordict.get(key) for key in part.in_keys]
        output = checkpoint(part.module, *inputs, use_reentrant=False)
        tensordict.set(part.out_keys[0], output)
        return tensordict

    def _decode(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``("next", "reco_pixels")`` (a hook for decoders that read more keys)."""
        return self._run_pixel_network(self.decoder, tensordict)

    def infer_latent_action(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Steps 1 and 2 alone: encode the frames and write ``"latent_action"``.

        The RSSM and the decoder are not run, e.g. to train or probe the action model by
        itself.

        Examples:
            >>> from tensordict import TensorDict
            >>> model = make_world_model("tiny")
            >>> td = TensorDict({"pixels": torch.zeros(2, 4, 3, 64, 64, dtype=torch.uint8),
            ...                  "next": {"pixels": torch.zeros(2, 4, 3, 64, 64,
            ...                                             dtype=torch.uint8)},
            ...                  "is_init": torch.zeros(2, 4, 1, dtype=torch.bool)}, [2, 4])
            >>> model.infer_latent_action(td)["latent_action"].shape
            torch.Size([2, 4, 8])
        """
        self._prepare(tensordict)
        tensordict = self._run_pixel_network(self.encoder, tensordict)
        self._embed_current_frames(tensordict)
        return self.action_model(tensordict)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = self.infer_latent_action(tensordict)
        tensordict = self.rssm(tensordict)
        tensordict = self._decode(tensordict)
        for head in self.reward_heads:
            tensordict = head(tensordict)
        return tensordict


def make_latent_action_model(config: Mapping) -> LatentActionModel:
    """Build the :class:`LatentActionModel` described by a world-model configuration.

    Examples:
        >>> make_latent_action_model(world_model_config("tiny")).action_dim
        8
    """
    spec = config["latent_action"]
    if spec["input_mode"] in EMBEDDING_MODES:
        encoder = _make_encoder(config["encoder"], config["channels"], config["image_size"])
        combine = "difference" if spec["input_mode"] == "embedding_difference" else "concat"
        trunk = EmbeddingPair(encoder.output_features, combine=combine)
    else:
        channels = latent_action_trunk_channels(
            spec["input_mode"], spec["window"], config["channels"]
        )
        trunk = _make_encoder(spec["trunk"], channels, config["image_size"])
        padding = spec["trunk"].get("padding", "zeros")
        if padding == "circular":
            use_circular_padding(trunk)
        elif padding != "zeros":
            raise ValueError(
                f"latent_action.trunk.padding must be 'zeros' or 'circular', got {padding!r}."
            )
    return LatentActionModel(
        trunk,
        action_dim=spec["dim"],
        hidden_dim=spec["hidden"],
        output_type=spec["output_type"],
        input_mode=spec["input_mode"],
        window=spec["window"],
        shift=spec.get("shift", 0),
        num_categoricals=spec["num_categoricals"],
    )


def make_action_encoder(config: Mapping, action_dim: int) -> ActionEncoder:
    """Build the fine-tuning :class:`ActionEncoder` matching a world-model configuration.

    Examples:
        >>> make_action_encoder(world_model_config("tiny"), action_dim=4)(torch.zeros(4)).shape
        torch.Size([8])
    """
    spec = config["action_encoder"]
    return ActionEncoder(action_dim, config["latent_action"]["dim"], spec["hidden"], spec["depth"])


def make_reward_head(config: Mapping, out_key: NestedKey = ("next", "reward")) -> TensorDictModule:
    """An ELU MLP from the model state ``[state, belief]`` to a scalar reward prediction.

    Examples:
        >>> make_reward_head(world_model_config("tiny")).out_keys
        [('next', 'reward')]
    """
    rssm, spec = config["rssm"], config["reward_head"]
    network = MLP(
        in_features=rssm["categoricals"] * rssm["classes"] + rssm["deter"],
        out_features=1,
        num_cells=[spec["hidden"]] * spec["depth"],
        activation_class=nn.ELU,
    )
    return TensorDictModule(
        network, in_keys=[("next", "state"), ("next", "belief")], out_keys=[out_key]
    )


def make_rssm_rollout(
    rssm: Mapping, action_dim: int, obs_embed_dim: int, *, action_key: NestedKey
) -> RSSMRolloutV3:
    """TorchRL's DreamerV3 RSSM (prior, posterior, rollout over time) of a ``rssm`` config.

    The prior reads ``action_key`` (``action_dim`` wide, 0 for an action-free prior); the
    posterior reads ``("next", "encoded_latents")`` (``obs_embed_dim`` wide). State and
    belief are reset where ``"is_init"`` is set.

    Examples:
        >>> rollout = make_rssm_rollout(world_model_config("tiny")["rssm"], 8, 256,
        ...                             action_key="latent_action")
        >>> rollout.action_key
        'latent_action'
    """
    prior = RSSMPriorV3(
        action_shape=(action_dim,),
        hidden_dim=rssm["hidden"],
        rnn_hidden_dim=rssm["deter"],
        num_categoricals=rssm["categoricals"],
        num_classes=rssm["classes"],
        action_dim=action_dim,
    )
    posterior = RSSMPosteriorV3(
        hidden_dim=rssm["hidden"],
        num_categoricals=rssm["categoricals"],
        num_classes=rssm["classes"],
        rnn_hidden_dim=rssm["deter"],
        obs_embed_dim=obs_embed_dim,
    )
    return RSSMRolloutV3(
        TensorDictModule(
            prior,
            in_keys=["state", "belief", action_key],
            out_keys=[("next", "prior_logits"), ("next", "state"), ("next", "belief")],
        ),
        TensorDictModule(
            posterior,
            in_keys=[("next", "belief"), ("next", "encoded_latents")],
            out_keys=[("next", "posterior_logits"), ("next", "state")],
        ),
        reset_key="is_init",
        action_key=action_key,
    )


def make_world_model(
    preset: str | Mapping = "tiny",
    *,
    action_model: TensorDictModuleBase | None = None,
    reward_keys: list[NestedKey] | None = None,
    validate_inputs: bool = True,
    **overrides: Any,
) -> PreLARWorldModel:
    """Build a :class:`PreLARWorldModel` from a preset name or a configuration mapping.

    Args:
        preset: ``"paper"``, ``"small"``, ``"tiny"`` or a full configuration mapping.
        action_model: the module writing ``"latent_action"``; defaults to the preset's
            :class:`LatentActionModel`.
        reward_keys: one reward head per key (e.g. ``[("next", "reward")]`` at fine-tuning);
            none by default, as action-free video has no reward.
        validate_inputs: check the frames of every batch (shape, range, NaN).
        **overrides: merged into the preset (see :func:`world_model_config`).

    Examples:
        >>> model = make_world_model("tiny", rssm={"deter": 32})
        >>> model.rssm_prior.rnn_hidden_dim
        32
    """
    config = world_model_config(preset, **overrides)
    image_size, channels = config["image_size"], config["channels"]
    rssm = config["rssm"]
    stoch = rssm["categoricals"] * rssm["classes"]
    latent_dim = config["latent_action"]["dim"]
    encoder_net = _make_encoder(config["encoder"], channels, image_size)
    rollout = make_rssm_rollout(
        config["rssm"], latent_dim, encoder_net.output_features, action_key="latent_action"
    )
    decoder = TensorDictModule(
        _make_decoder(config["decoder"], stoch + rssm["deter"], channels, image_size),
        in_keys=[("next", "state"), ("next", "belief")],
        out_keys=[("next", "reco_pixels")],
    )
    return PreLARWorldModel(
        action_model if action_model is not None else make_latent_action_model(config),
        TensorDictModule(
            encoder_net, in_keys=[("next", "pixels")], out_keys=[("next", "encoded_latents")]
        ),
        rollout,
        decoder,
        [make_reward_head(config, key) for key in reward_keys or []],
        image_shape=(channels, image_size, image_size),
        validate_inputs=validate_inputs,
        activation_checkpointing=config.get("activation_checkpointing", False),
    )
