"""The PreLAR world model, assembled from TorchRL's DreamerV3 RSSM and PreLAR's networks.

The RSSM always reads its action from ``"latent_action"``; only the module that writes
that key changes between stages (:class:`~torchrl_prelar.modules.LatentActionModel` for
pre-training, :class:`~torchrl_prelar.modules.ActionEncoder` for fine-tuning).

Every setting is a keyword argument: :func:`make_world_model` takes one mapping per part,
holding the settings of that part's factory (:func:`make_pixel_encoder`,
:func:`make_pixel_decoder`, :func:`make_rssm_rollout`, :func:`make_latent_action_model`,
:func:`make_action_encoder`, :func:`make_reward_head`), and its defaults build the CPU-sized
model. :func:`resolve_world_model_kwargs` fills in every default: what a checkpoint stores.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
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


def chain_in_keys(
    parts: list[TensorDictModuleBase], made_inside: set | None = None
) -> list[NestedKey]:
    """Keys a chain of modules reads that no earlier module of the chain writes.

    Args:
        parts (list of TensorDictModuleBase): the modules, in the order they run.
        made_inside (set, optional): keys the chain writes by other means, never counted
            as read. Defaults to ``None``.

    Returns:
        the keys, in the order they are first read.

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
    """Supply a zero ``"state"`` / ``"belief"`` of ``prior``'s sizes where the batch has none.

    Args:
        tensordict (TensorDictBase): the batch, modified in place.
        prior (RSSMPriorV3): the prior whose state and belief sizes are used.
        device (torch.device): device of the zeros.
    """
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

    Args:
        decoder (TensorDictModule): the world model's decoder.
        inputs (TensorDictBase): a world-model output with the batch size of ``state`` (e.g.
            one step of it); a decoder that reads more than the state (ContextWM's context
            maps) finds its other inputs there.
        state (torch.Tensor): the stochastic state to decode.
        belief (torch.Tensor): the deterministic belief to decode.

    Returns:
        the decoded frames, centred floats.

    Examples:
        >>> from tensordict import TensorDict
        >>> model = make_world_model()
        >>> decode_states(model.decoder, TensorDict({}, [2]), torch.zeros(2, 256),
        ...               torch.zeros(2, 256)).shape
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
    stored (the :func:`make_world_model` argument of the same name sets it).

    Args:
        action_model (TensorDictModuleBase): the module writing ``"latent_action"``.
        encoder (TensorDictModule): the frame encoder, ``("next", "pixels")`` to
            ``("next", "encoded_latents")``.
        rssm (RSSMRolloutV3): the RSSM rollout over time.
        decoder (TensorDictModule): the decoder, ``("next", "state")`` and
            ``("next", "belief")`` to ``("next", "reco_pixels")``.
        reward_heads (list of TensorDictModule, optional): reward predictors from the state.
            Defaults to ``None`` (no reward head).

    Keyword Args:
        image_shape (tuple of int, optional): ``(channels, height, width)`` of a frame.
            Defaults to ``(3, 64, 64)``.
        pixel_keys (tuple of NestedKey, optional): the frame keys checked on each batch; the
            first one is o_t. Defaults to ``("pixels", ("next", "pixels"))``.
        validate_inputs (bool, optional): check the frames of every batch (key, shape,
            range, NaN). Defaults to ``True``.
        activation_checkpointing (bool, optional): recompute pixel-network activations in
            backward instead of storing them. Defaults to ``False``.

    Examples:
        >>> from tensordict import TensorDict
        >>> model = make_world_model()
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

        Residual blocks (``"resnet"`` networks, latent action trunk included) are recomputed
        one block at a time; a pixel network without residual blocks (``"conv"``) is
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
        """The keys the model reads: those of its parts that no earlier part writes."""
        # o_t embeddings ("encoded_latents") are made here when the action model asks for them.
        return chain_in_keys(self._parts, made_inside={"encoded_latents"})

    @property
    def out_keys(self) -> list[NestedKey]:
        """The keys the model writes, part by part."""
        return [key for part in self._parts for key in part.out_keys]

    @property
    def rssm_prior(self) -> RSSMPriorV3:
        """The prior network (GRU + prior head), e.g. for imagination."""
        return self.rssm.rssm_prior.module

    def _prepare(self, tensordict: TensorDictBase) -> None:
        if self.validate_inputs:
            for key in self.pixel_keys:
                check_pixels(tensordict, key, self.image_shape)
            is_init = tensordict.get("is_init", None)
            if is_init is not None and is_init.dtype != torch.bool:
                raise ValueError(
                    f"'is_init' has dtype {is_init.dtype}: expected torch.bool, True at the "
                    "first step of each sequence (the RSSM starts from zeros there)."
                )
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

        Keyword Args:
            **compile_kwargs: keyword arguments of :meth:`torch.nn.Module.compile` (e.g.
                ``mode``).
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
            >>> model = make_world_model()
            >>> td = TensorDict({"pixels": torch.zeros(2, 4, 3, 64, 64, dtype=torch.uint8),
            ...                  "next": {"pixels": torch.zeros(2, 4, 3, 64, 64,
            ...                                             dtype=torch.uint8)},
            ...                  "is_init": torch.zeros(2, 4, 1, dtype=torch.bool)}, [2, 4])
            >>> model.infer_latent_action(td)["latent_action"].shape
            torch.Size([2, 4, 16])
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


def _settings_of(factory: Callable[..., Any]) -> dict[str, Any]:
    """A part factory's settings (its arguments before ``*``) with their defaults."""
    parameters = inspect.signature(factory).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD}


def _resolve(
    name: str, owner: str, defaults: Mapping[str, Any], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``given`` over ``defaults`` (``owner``'s settings); an unknown setting raises, naming
    the accepted ones."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise TypeError(
            f"{name} has no setting {', '.join(map(repr, unknown))}: the settings of "
            f"{owner} are {', '.join(defaults)}."
        )
    merged = {**defaults, **given}
    return {key: list(v) if isinstance(v, tuple) else v for key, v in merged.items()}


def _resolve_part(name: str, factory: Callable[..., Any], given: Mapping | None) -> dict:
    return _resolve(name, factory.__name__, _settings_of(factory), given)


def model_state_size(rssm: Mapping[str, Any]) -> int:
    """Width of the model state ``[state, belief]`` of an RSSM of these (resolved) settings.

    Args:
        rssm (Mapping[str, Any]): resolved :func:`make_rssm_rollout` settings.

    Returns:
        ``categoricals * classes + deter``.

    Examples:
        >>> model_state_size({"deter": 256, "categoricals": 16, "classes": 16})
        512
    """
    return rssm["categoricals"] * rssm["classes"] + rssm["deter"]


def make_pixel_encoder(
    type: str = "conv",
    depth: int = 16,
    mults: Sequence[int] = (1, 2, 4, 8),
    widths: Sequence[int] = (48, 96, 192),
    blocks_per_stage: int = 2,
    pool: str = "flatten",
    padding: str = "zeros",
    *,
    in_channels: int = 3,
    image_size: int = 64,
) -> nn.Module:
    """A pixel encoder: TorchRL's DreamerV3 conv encoder or the reference ResNet encoder.

    Args:
        type (str, optional): ``"conv"``
            (:func:`~torchrl_prelar.modules.networks.make_conv_encoder`, sized by ``depth``
            and ``mults``) or ``"resnet"``
            (:class:`~torchrl_prelar.modules.networks.ResNetEncoder`, sized by ``widths`` and
            ``blocks_per_stage``). Defaults to ``"conv"``.
        depth (int, optional): channels of the first conv stage. Defaults to ``16``.
        mults (sequence of int, optional): channel multiplier of each conv stage (each
            halves the side). Defaults to ``(1, 2, 4, 8)``.
        widths (sequence of int, optional): channels of each residual stage. Defaults to
            ``(48, 96, 192)``.
        blocks_per_stage (int, optional): residual blocks per stage. Defaults to ``2``.
        pool (str, optional): ``"flatten"`` the last feature map, or average it over space
            (``"mean"``). Defaults to ``"flatten"``.
        padding (str, optional): ``"zeros"``, or ``"circular"`` for frames on a torus
            (:func:`~torchrl_prelar.modules.latent_action.use_circular_padding`). Defaults
            to ``"zeros"``.

    Keyword Args:
        in_channels (int, optional): channels read (3 for a frame, 6 for a frame pair).
            Defaults to ``3``.
        image_size (int, optional): frame height and width. Defaults to ``64``.

    Returns:
        the encoder, an :class:`~torch.nn.Module` with an ``output_features`` attribute.

    Raises:
        ValueError: if ``type`` or ``padding`` is not one of the values above.

    Examples:
        >>> make_pixel_encoder(depth=8, in_channels=6).output_features
        1024
        >>> make_pixel_encoder("resnet", widths=(8, 8, 16), pool="mean").output_features
        16
    """
    if type == "resnet":
        encoder = ResNetEncoder(in_channels, tuple(widths), blocks_per_stage, image_size, pool)
    elif type == "conv":
        encoder = make_conv_encoder(in_channels, depth, tuple(mults), image_size, pool)
    else:
        raise ValueError(f"Unknown encoder type {type!r}: expected 'resnet' or 'conv'.")
    if padding == "circular":
        use_circular_padding(encoder)
    elif padding != "zeros":
        raise ValueError(f"padding must be 'zeros' or 'circular', got {padding!r}.")
    return encoder


def make_pixel_decoder(
    type: str = "conv",
    depth: int = 16,
    mults: Sequence[int] = (1, 2, 4, 8),
    widths: Sequence[int] = (192, 96, 48, 24),
    *,
    in_features: int,
    channels: int = 3,
    image_size: int = 64,
) -> nn.Module:
    """A pixel decoder: TorchRL's DreamerV3 conv decoder or the reference ResNet decoder.

    Args:
        type (str, optional): ``"conv"``
            (:func:`~torchrl_prelar.modules.networks.make_conv_decoder`, sized by ``depth``
            and ``mults``) or ``"resnet"``
            (:class:`~torchrl_prelar.modules.networks.ResNetDecoder`, sized by ``widths``).
            Defaults to ``"conv"``.
        depth (int, optional): channels of the last conv stage. Defaults to ``16``.
        mults (sequence of int, optional): channel multiplier of each conv stage (each
            doubles the side). Defaults to ``(1, 2, 4, 8)``.
        widths (sequence of int, optional): channels from the first residual stage to the
            last. Defaults to ``(192, 96, 48, 24)``.

    Keyword Args:
        in_features (int): size of the features decoded (the model state
            ``[state, belief]``).
        channels (int, optional): image channels. Defaults to ``3``.
        image_size (int, optional): image height and width. Defaults to ``64``.

    Returns:
        the decoder, an :class:`~torch.nn.Module` from features to centred frames.

    Raises:
        ValueError: if ``type`` is not ``"conv"`` or ``"resnet"``.

    Examples:
        >>> make_pixel_decoder(depth=8, in_features=32)(torch.zeros(2, 32)).shape
        torch.Size([2, 3, 64, 64])
    """
    if type == "resnet":
        return ResNetDecoder(in_features, tuple(widths), channels, image_size)
    if type == "conv":
        return make_conv_decoder(in_features, depth, tuple(mults), channels, image_size)
    raise ValueError(f"Unknown decoder type {type!r}: expected 'resnet' or 'conv'.")


def make_rssm_rollout(
    deter: int = 256,
    hidden: int = 256,
    categoricals: int = 16,
    classes: int = 16,
    *,
    action_dim: int,
    obs_embed_dim: int,
    action_key: NestedKey = "latent_action",
) -> RSSMRolloutV3:
    """TorchRL's DreamerV3 RSSM: prior, posterior and their rollout over time.

    The prior reads ``action_key`` (``action_dim`` wide, 0 for an action-free prior); the
    posterior reads ``("next", "encoded_latents")`` (``obs_embed_dim`` wide). State and
    belief are reset where ``"is_init"`` is set.

    Args:
        deter (int, optional): size of the deterministic state (the GRU's ``"belief"``).
            Defaults to ``256``.
        hidden (int, optional): width of the prior's and posterior's hidden layers.
            Defaults to ``256``.
        categoricals (int, optional): categorical variables of the stochastic ``"state"``.
            Defaults to ``16``.
        classes (int, optional): classes of each categorical. Defaults to ``16``.

    Keyword Args:
        action_dim (int): width of the action the prior reads.
        obs_embed_dim (int): width of the frame embedding the posterior reads.
        action_key (NestedKey, optional): the action's key. Defaults to
            ``"latent_action"``.

    Examples:
        >>> rollout = make_rssm_rollout(deter=64, action_dim=8, obs_embed_dim=256)
        >>> rollout.action_key, rollout.rssm_prior.module.rnn_hidden_dim
        ('latent_action', 64)
    """
    prior = RSSMPriorV3(
        action_shape=(action_dim,),
        hidden_dim=hidden,
        rnn_hidden_dim=deter,
        num_categoricals=categoricals,
        num_classes=classes,
        action_dim=action_dim,
    )
    posterior = RSSMPosteriorV3(
        hidden_dim=hidden,
        num_categoricals=categoricals,
        num_classes=classes,
        rnn_hidden_dim=deter,
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


def make_latent_action_model(
    dim: int = 16,
    hidden: int = 256,
    output_type: str = "gaussian",
    input_mode: str = "concat",
    window: int = 2,
    shift: int = 0,
    num_categoricals: int = 4,
    trunk: Mapping[str, Any] | None = None,
    *,
    channels: int = 3,
    image_size: int = 64,
    embedding_dim: int | None = None,
) -> LatentActionModel:
    """A :class:`LatentActionModel` (see it for what each setting does).

    Args:
        dim (int, optional): latent action size (``action_dim``). Defaults to ``16``.
        hidden (int, optional): width of the head's hidden layer. Defaults to ``256``.
        output_type (str, optional): ``"gaussian"``, ``"deterministic"`` or ``"discrete"``.
            Defaults to ``"gaussian"``.
        input_mode (str, optional): ``"concat"`` or ``"difference"`` (frames, read by a
            trunk of their own), ``"embedding"`` or ``"embedding_difference"`` (the world
            model's encoder embeddings of o_t and o_{t+1}, ``embedding_dim`` wide). Defaults
            to ``"concat"``.
        window (int, optional): frames per inference, ending at o_{t+1}. Defaults to ``2``.
        shift (int, optional): training-time random shift of the frames, in pixels (frame
            inputs). Defaults to ``0``.
        num_categoricals (int, optional): categoricals of the discrete output. Defaults to
            ``4``.
        trunk (Mapping[str, Any], optional): :func:`make_pixel_encoder` settings of the frame
            trunk (frame inputs). Defaults to ``None`` (that factory's defaults).

    Keyword Args:
        channels (int, optional): channels of a frame. Defaults to ``3``.
        image_size (int, optional): frame height and width. Defaults to ``64``.
        embedding_dim (int, optional): width of the encoder embedding, required by the
            embedding inputs. Defaults to ``None``.

    Raises:
        ValueError: if an embedding ``input_mode`` is given without ``embedding_dim``.

    Examples:
        >>> make_latent_action_model(dim=8, trunk={"depth": 8}).action_dim
        8
        >>> model = make_latent_action_model(input_mode="embedding", embedding_dim=256)
        >>> model.trunk.output_features
        512
    """
    trunk = _resolve_part("trunk", make_pixel_encoder, trunk)
    if input_mode in EMBEDDING_MODES:
        if embedding_dim is None:
            raise ValueError(
                f"input_mode={input_mode!r} reads the world model's encoder embeddings: give "
                "embedding_dim, the encoder's output_features."
            )
        combine = "difference" if input_mode == "embedding_difference" else "concat"
        network = EmbeddingPair(embedding_dim, combine=combine)
    else:
        network = make_pixel_encoder(
            **trunk,
            in_channels=latent_action_trunk_channels(input_mode, window, channels),
            image_size=image_size,
        )
    return LatentActionModel(
        network,
        action_dim=dim,
        hidden_dim=hidden,
        output_type=output_type,
        input_mode=input_mode,
        window=window,
        shift=shift,
        num_categoricals=num_categoricals,
    )


def make_action_encoder(
    hidden: int = 256, depth: int = 1, identity: bool = False, *, action_dim: int, latent_dim: int
) -> ActionEncoder:
    """The fine-tuning :class:`ActionEncoder`: ``"action"`` to a ``latent_dim`` latent action.

    Args:
        hidden (int, optional): width of the hidden layers. Defaults to ``256``.
        depth (int, optional): number of hidden layers. Defaults to ``1``.
        identity (bool, optional): write the real action itself (DreamerV2's action path;
            :func:`make_world_model` then builds the RSSM for ``action_dim``). Defaults to
            ``False``.

    Keyword Args:
        action_dim (int): real action size.
        latent_dim (int): latent action size of the world model it feeds.

    Examples:
        >>> make_action_encoder(action_dim=4, latent_dim=16)(torch.zeros(4)).shape
        torch.Size([16])
    """
    return ActionEncoder(action_dim, latent_dim, hidden, depth, identity)


def make_reward_head(
    hidden: int = 128,
    depth: int = 2,
    *,
    in_features: int,
    out_key: NestedKey = ("next", "reward"),
) -> TensorDictModule:
    """An ELU MLP from the model state ``[state, belief]`` to a scalar reward prediction.

    Args:
        hidden (int, optional): width of the hidden layers. Defaults to ``128``.
        depth (int, optional): number of hidden layers. Defaults to ``2``.

    Keyword Args:
        in_features (int): size of the model state.
        out_key (NestedKey, optional): where the prediction is written. Defaults to
            ``("next", "reward")``.

    Examples:
        >>> make_reward_head(in_features=512).out_keys
        [('next', 'reward')]
    """
    network = MLP(
        in_features=in_features,
        out_features=1,
        num_cells=[hidden] * depth,
        activation_class=nn.ELU,
    )
    return TensorDictModule(
        network, in_keys=[("next", "state"), ("next", "belief")], out_keys=[out_key]
    )


#: The arguments of :func:`make_world_model` that say what is built around the world model
#: (a checkpoint does not store them): the others are its settings.
BUILD_ARGUMENTS = ("action_dim", "action_model", "reward_keys", "validate_inputs")
#: The part mappings of :func:`make_world_model` and the factory whose settings each holds.
_PART_FACTORIES = {
    "encoder": make_pixel_encoder,
    "decoder": make_pixel_decoder,
    "rssm": make_rssm_rollout,
    "latent_action": make_latent_action_model,
    "action_encoder": make_action_encoder,
    "reward_head": make_reward_head,
}


def resolve_world_model_kwargs(**settings: Any) -> dict[str, Any]:
    """Every setting of :func:`make_world_model`, defaults filled in.

    Each part's mapping is checked against its factory. The result is what a checkpoint
    stores to rebuild its model independently of the defaults.

    Keyword Args:
        **settings: arguments of :func:`make_world_model`, except those of
            :data:`BUILD_ARGUMENTS`.

    Returns:
        a dict of every setting, each part's mapping complete.

    Raises:
        TypeError: if a setting is unknown, naming the accepted ones.

    Examples:
        >>> kwargs = resolve_world_model_kwargs(rssm={"deter": 64})
        >>> kwargs["rssm"], kwargs["latent_action"]["trunk"]["depth"]
        ({'deter': 64, 'hidden': 256, 'categoricals': 16, 'classes': 16}, 16)
        >>> resolve_world_model_kwargs(rssm={"size": 64})
        Traceback (most recent call last):
        ...
        TypeError: rssm has no setting 'size': the settings of make_rssm_rollout are deter, ...
    """
    parameters = inspect.signature(make_world_model).parameters.items()
    defaults = {name: p.default for name, p in parameters if name not in BUILD_ARGUMENTS}
    resolved = _resolve("make_world_model", "make_world_model", defaults, settings)
    for part, factory in _PART_FACTORIES.items():
        resolved[part] = _resolve_part(part, factory, resolved[part])
    latent = resolved["latent_action"]
    latent["trunk"] = _resolve_part("latent_action.trunk", make_pixel_encoder, latent["trunk"])
    return resolved


def make_world_model(
    *,
    image_size: int = 64,
    channels: int = 3,
    encoder: Mapping[str, Any] | None = None,
    decoder: Mapping[str, Any] | None = None,
    rssm: Mapping[str, Any] | None = None,
    latent_action: Mapping[str, Any] | None = None,
    action_encoder: Mapping[str, Any] | None = None,
    reward_head: Mapping[str, Any] | None = None,
    activation_checkpointing: bool = False,
    action_dim: int | None = None,
    action_model: TensorDictModuleBase | None = None,
    reward_keys: list[NestedKey] | None = None,
    validate_inputs: bool = True,
) -> PreLARWorldModel:
    """Build a :class:`PreLARWorldModel`; the defaults give the CPU-sized model.

    Each part's mapping holds the settings of its factory (the arguments before ``*``;
    those not given keep their defaults). The defaults build TorchRL's DreamerV3 conv
    encoder and decoder, a 256-unit RSSM with 16 x 16 categoricals and a 16-d Gaussian
    latent action inferred from the frame pair.

    Keyword Args:
        image_size (int, optional): frame height and width. Defaults to ``64``.
        channels (int, optional): frame channels. Defaults to ``3``.
        encoder (Mapping[str, Any], optional): :func:`make_pixel_encoder` settings of the
            frame encoder. Defaults to ``None``.
        decoder (Mapping[str, Any], optional): :func:`make_pixel_decoder` settings of the
            decoder. Defaults to ``None``.
        rssm (Mapping[str, Any], optional): :func:`make_rssm_rollout` settings. Defaults to
            ``None``.
        latent_action (Mapping[str, Any], optional): :func:`make_latent_action_model`
            settings; its ``dim`` is the width of the action the RSSM reads, whatever the
            action model (but an identity ``action_encoder``). Defaults to ``None``.
        action_encoder (Mapping[str, Any], optional): :func:`make_action_encoder` settings,
            used with ``action_dim``; with ``identity`` the RSSM reads the ``action_dim``-d
            real action and ``latent_action``'s ``dim`` is not used. Defaults to ``None``.
        reward_head (Mapping[str, Any], optional): :func:`make_reward_head` settings of
            each reward head. Defaults to ``None``.
        activation_checkpointing (bool, optional): recompute pixel-network activations in
            backward (:attr:`PreLARWorldModel.activation_checkpointing`). Defaults to
            ``False``.
        action_dim (int, optional): real action size. When given, the action model is a new
            :class:`ActionEncoder` reading ``"action"`` (fine-tuning) and only
            ``("next", "pixels")`` is read. Defaults to ``None``: a
            :class:`LatentActionModel` infers the latent action from the frames.
        action_model (TensorDictModuleBase, optional): the module writing
            ``"latent_action"``, in place of either. Defaults to ``None``.
        reward_keys (list of NestedKey, optional): one reward head per key (e.g.
            ``[("next", "reward")]`` at fine-tuning). Defaults to ``None``: no reward head,
            as action-free video has no reward.
        validate_inputs (bool, optional): check the frames of every batch (shape, range,
            NaN). Defaults to ``True``.

    Raises:
        ValueError: if both ``action_dim`` and ``action_model`` are given.
        TypeError: if a part mapping holds an unknown setting.


    Examples:
        >>> model = make_world_model(rssm={"deter": 32}, latent_action={"dim": 8})
        >>> model.rssm_prior.rnn_hidden_dim, model.action_model.action_dim
        (32, 8)
        >>> make_world_model(action_dim=4).action_model.in_keys
        ['action']
    """
    if action_dim is not None and action_model is not None:
        raise ValueError("Give action_dim (a new ActionEncoder) or action_model, not both.")
    settings = resolve_world_model_kwargs(
        image_size=image_size,
        channels=channels,
        encoder=encoder,
        decoder=decoder,
        rssm=rssm,
        latent_action=latent_action,
        action_encoder=action_encoder,
        reward_head=reward_head,
        activation_checkpointing=activation_checkpointing,
    )
    rssm, latent = settings["rssm"], settings["latent_action"]
    raw_action = action_dim is not None and settings["action_encoder"]["identity"]
    action_width = action_dim if raw_action else latent["dim"]
    encoder_net = make_pixel_encoder(
        **settings["encoder"], in_channels=channels, image_size=image_size
    )
    rollout = make_rssm_rollout(
        **rssm, action_dim=action_width, obs_embed_dim=encoder_net.output_features
    )
    features = model_state_size(rssm)
    decoder_net = make_pixel_decoder(
        **settings["decoder"], in_features=features, channels=channels, image_size=image_size
    )
    if action_dim is not None:
        action_model = make_action_encoder(
            **settings["action_encoder"], action_dim=action_dim, latent_dim=action_width
        )
    elif action_model is None:
        action_model = make_latent_action_model(
            **latent,
            channels=channels,
            image_size=image_size,
            embedding_dim=encoder_net.output_features,
        )
    heads = [
        make_reward_head(**settings["reward_head"], in_features=features, out_key=key)
        for key in reward_keys or []
    ]
    model = PreLARWorldModel(
        action_model,
        TensorDictModule(
            encoder_net, in_keys=[("next", "pixels")], out_keys=[("next", "encoded_latents")]
        ),
        rollout,
        TensorDictModule(
            decoder_net,
            in_keys=[("next", "state"), ("next", "belief")],
            out_keys=[("next", "reco_pixels")],
        ),
        heads,
        image_shape=(channels, image_size, image_size),
        validate_inputs=validate_inputs,
        activation_checkpointing=activation_checkpointing,
    )
    if action_dim is not None:
        model.pixel_keys = [("next", "pixels")]  # the action encoder reads no o_t frame
    return model
