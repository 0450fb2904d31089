"""ContextWM baseline (Wu et al., NeurIPS 2023): APV plus a context encoder read by the decoder.

ContextWM separates the static context of a clip from its dynamics. A context frame of each
clip (:class:`ContextFrame`; a random step of the clip in training, as ContextWM's default
``trand``) goes through a separate context encoder (:class:`MultiScaleEncoder`, the world
model's encoder architecture with its own weights) that keeps feature maps at several
resolutions. The decoder (:class:`ContextualDecoder`) reads them through cross-attention
(:class:`ContextCrossAttention`): its feature maps are the queries, the context map of the same
resolution the keys and values, at 16x16 and 8x8 by default (ContextWM attends where the
decoder's maps are smaller than 32x32). The latent dynamics then need not model the scene.

Pre-training (:func:`make_contextwm_pretrain_model`): APV's action-free world model
(:func:`~torchrl_prelar.baselines.apv.make_action_free_world_model`) with the contextual decoder,
trained by :class:`~torchrl_prelar.objectives.PreLARLoss` in the same loop (its action KL is
identically 0). Fine-tuning (:func:`make_contextwm_world_model`): APV's stacked model
(:class:`~torchrl_prelar.baselines.apv.APVWorldModel`: a new action-conditional RSSM on the
action-free one, the video intrinsic bonus on the action-free features) whose pre-trained
decoder still reads the context of each fine-tuning clip.

Keys (under the ``[*batch, T]`` batch of the world model):

================================  =========================================================
``("context", "pixels")``         the context frame of each step, ``[*batch, T, C, H, W]``
                                  as the frames are given (uint8 or centred floats); one
                                  frame per clip (an expanded view), written by
                                  :class:`ContextFrame` unless already present
``("context", "features_<s>")``   the ``s x s`` context feature map, ``[*batch, T, C_s, s, s]``
================================  =========================================================

Settings (the ``context`` argument of :func:`make_contextwm_pretrain_model` and
:func:`make_contextwm_world_model`, e.g. ``context={"mask_ratio": 0.5}``; defaults in
:data:`CONTEXT_DEFAULTS`):
``resolutions`` (sides of the attended maps), ``heads``, ``mask_ratio`` (fraction of context
tokens dropped from the keys in training, ContextWM's ``ctx_attmask``), ``dropout``
(attention dropout), ``frame`` (``random`` or ``first``), ``shift`` (random-shift
augmentation of the context frame in training, pixels; ContextWM's ``ctx_aug: shift`` is 8).

What ContextWM has that is not built here: the attention-mask warm-up schedule
(``ctx_attmaskwarmup``, off in ContextWM's configurations) and the flip / scale / erasing
context augmentations (``none`` is ContextWM's default; ``shift`` is built). Its dual reward
predictor is not ContextWM-specific here: every fine-tuning arm has the second head
(``("next", "aux_reward")``, the plain task reward, beside the reward + bonus head; see
:class:`~torchrl_prelar.objectives.finetune.FinetuneModelLoss`). Differences: the attention
output is added to the decoder map before the stage's next layer (ContextWM adds it inside
the first residual layer, before its convolutions); the mask drops context tokens in training
only (ContextWM also at evaluation) and the context frame is the clip's first in eval mode,
so open-loop predictions do not see a future frame. ``PreLARLoss``'s optional prior
reconstruction (``lambda_prior_reco``) decodes without the context keys and is not supported.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule, TensorDictModuleBase
from tensordict.utils import NestedKey
from torch import nn

from torchrl_prelar.baselines.apv import (
    APVWorldModel,
    make_action_free_world_model,
    make_apv_world_model,
)
from torchrl_prelar.modules.pixels import centred_pixels
from torchrl_prelar.modules.world_model import (
    PreLARWorldModel,
    make_pixel_encoder,
    model_state_size,
    resolve_world_model_kwargs,
)

CONTEXT_PIXELS_KEY: NestedKey = ("context", "pixels")
#: Defaults of the ``context`` settings of the ContextWM models.
CONTEXT_DEFAULTS: dict[str, Any] = {
    "resolutions": [16, 8],
    "heads": 4,
    "mask_ratio": 0.75,
    "dropout": 0.1,
    "frame": "random",
    "shift": 0,
}
FRAME_CHOICES = ("random", "first")


def context_feature_key(side: int) -> NestedKey:
    """Key of the ``side x side`` context feature map.

    Args:
        side (int): the map's side, in pixels.

    Examples:
        >>> context_feature_key(8)
        ('context', 'features_8')
    """
    return ("context", f"features_{side}")


def context_settings(context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``context`` settings over :data:`CONTEXT_DEFAULTS`, checked.

    Args:
        context (Mapping[str, Any], optional): the settings given. Defaults to ``None``
            (every default).

    Returns:
        a dict of every context setting.

    Raises:
        ValueError: if a setting is unknown or out of range, naming it.

    Examples:
        >>> context_settings({"heads": 2})["heads"], context_settings()["frame"]
        (2, 'random')
    """
    settings = {**CONTEXT_DEFAULTS, **(context or {})}
    unknown = sorted(set(settings) - set(CONTEXT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown context settings {unknown}: expected keys of {sorted(CONTEXT_DEFAULTS)}."
        )
    if settings["frame"] not in FRAME_CHOICES:
        raise ValueError(
            f"context.frame must be one of {FRAME_CHOICES}, got {settings['frame']!r}."
        )
    if not 0.0 <= settings["mask_ratio"] < 1.0:
        raise ValueError(f"context.mask_ratio must be in [0, 1), got {settings['mask_ratio']}.")
    if not settings["resolutions"] or min(settings["resolutions"]) < 1:
        raise ValueError(
            f"context.resolutions must list positive map sides, got {settings['resolutions']}."
        )
    if settings["heads"] < 1 or settings["shift"] < 0:
        raise ValueError("context.heads must be positive and context.shift non-negative.")
    return settings


def collapse_expanded(value: torch.Tensor, event_dims: int) -> torch.Tensor:
    """``value`` with every expanded (stride-0) batch dimension reduced to size 1.

    Work done on the result and expanded back equals the work done on ``value``, once per
    distinct entry: a context frame shared by the T steps of a clip is encoded once.

    Args:
        value (torch.Tensor): a tensor whose leading (batch) dimensions may be expanded.
        event_dims (int): trailing dimensions that are not batch dimensions.

    Examples:
        >>> frame = torch.zeros(2, 1, 3, 8, 8).expand(2, 5, 3, 8, 8)
        >>> collapse_expanded(frame, 3).shape
        torch.Size([2, 1, 3, 8, 8])
    """
    batch = value.ndim - event_dims
    index = tuple(
        slice(0, 1) if size > 1 and stride == 0 else slice(None)
        for size, stride in zip(value.shape[:batch], value.stride()[:batch], strict=True)
    )
    return value[index]


def random_shift(frames: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each ``[N, C, H, W]`` frame by up to ``pad`` pixels (edges replicated).

    Args:
        frames (torch.Tensor): frames, ``[N, C, H, W]``.
        pad (int): the largest offset per axis, in pixels.

    Examples:
        >>> random_shift(torch.rand(4, 3, 16, 16), pad=2).shape
        torch.Size([4, 3, 16, 16])
    """
    count, _, height, width = frames.shape
    padded = F.pad(frames, (pad, pad, pad, pad), mode="replicate")
    offsets = torch.randint(0, 2 * pad + 1, (2, count, 1), device=frames.device)
    rows = offsets[0] + torch.arange(height, device=frames.device)
    columns = offsets[1] + torch.arange(width, device=frames.device)
    index = torch.arange(count, device=frames.device)[:, None, None]
    shifted = padded[index, :, rows[:, :, None], columns[:, None, :]]  # [N, H, W, C]
    return shifted.permute(0, 3, 1, 2)


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


class ContextFrame(TensorDictModuleBase):
    """Write the context frame of each clip for every one of its steps.

    Reads ``[*batch, T, C, H, W]`` frames; writes one frame per clip, expanded over T (a
    view, no copy). In training, ``choice="random"`` picks a uniformly random step of each
    clip (ContextWM's ``trand``); ``"first"``, and eval mode, the first step. ``shift > 0``
    shifts the training context frame at random by up to that many pixels. A context frame
    already in the TensorDict is kept (a caller may supply its own).

    Args:
        choice (str, optional): ``"random"`` or ``"first"``. Defaults to ``"random"``.
        shift (int, optional): largest random shift of the training context frame, in
            pixels. Defaults to ``0``.

    Keyword Args:
        in_key (NestedKey, optional): the clip's frames. Defaults to
            ``("next", "pixels")``.
        out_key (NestedKey, optional): where the context frame is written. Defaults to
            :data:`CONTEXT_PIXELS_KEY`.

    Examples:
        >>> from tensordict import TensorDict
        >>> td = TensorDict({("next", "pixels"): torch.rand(2, 5, 3, 8, 8) - 0.5}, [2, 5])
        >>> out = ContextFrame("first")(td)
        >>> bool((out["context", "pixels"] == td["next", "pixels"][:, :1]).all())
        True
    """

    def __init__(
        self,
        choice: str = "random",
        shift: int = 0,
        *,
        in_key: NestedKey = ("next", "pixels"),
        out_key: NestedKey = CONTEXT_PIXELS_KEY,
    ):
        super().__init__()
        if choice not in FRAME_CHOICES:
            raise ValueError(f"choice must be one of {FRAME_CHOICES}, got {choice!r}.")
        self.choice, self.shift = choice, shift
        self.in_keys, self.out_keys = [in_key], [out_key]

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.out_keys[0] in tensordict.keys(include_nested=True):
            return tensordict
        frames = tensordict.get(self.in_keys[0])
        if frames.ndim < 5:
            raise ValueError(
                f"{self.in_keys[0]!r} has shape {tuple(frames.shape)}: expected clips "
                "[*batch, T, C, H, W]."
            )
        clips, steps = frames.shape[:-4], frames.shape[-4]
        if self.training and self.choice == "random":
            index = torch.randint(steps, clips, device=frames.device)
        else:
            index = torch.zeros(clips, dtype=torch.long, device=frames.device)
        index = index.reshape(*clips, 1, 1, 1, 1).expand(*clips, 1, *frames.shape[-3:])
        frame = frames.gather(-4, index)
        if self.training and self.shift:
            flat = random_shift(frame.reshape(-1, *frames.shape[-3:]), self.shift)
            frame = flat.reshape(frame.shape)
        tensordict.set(self.out_keys[0], frame.expand_as(frames))
        return tensordict


class MultiScaleEncoder(nn.Module):
    """A pixel encoder's layers, keeping its feature maps at the requested sides.

    ``encoder`` is a network of :mod:`torchrl_prelar.modules.networks` (its ``layers`` run on
    centred pixels: uint8 frames are converted by
    :func:`~torchrl_prelar.modules.pixels.centred_pixels` first); it is cut after the last
    layer needed, and the map kept for a side is
    the last one of that side (before the next downsampling, as ContextWM's shortcuts).
    Expanded batch dimensions (one frame per clip, shared by its steps) are encoded once.

    Args:
        encoder (nn.Module): the pixel encoder, with its own weights (ContextWM's context
            encoder is separate from the world model's).
        sides (list of int): map sides to keep, e.g. ``[16, 8]``.
        image_shape (tuple of int): ``(C, H, W)`` of the frames.

    Raises:
        ValueError: if the encoder has no feature map of a requested side.

    Examples:
        >>> from torchrl_prelar.modules.networks import make_conv_encoder
        >>> encoder = MultiScaleEncoder(make_conv_encoder(depth=4), [16, 8], (3, 64, 64))
        >>> [tuple(m.shape) for m in encoder(torch.zeros(2, 5, 3, 64, 64))]
        [(2, 5, 8, 16, 16), (2, 5, 16, 8, 8)]
        >>> encoder.channels
        {16: 8, 8: 16}
    """

    def __init__(self, encoder: nn.Module, sides: list[int], image_shape: tuple[int, int, int]):
        super().__init__()
        self.sides = sorted(set(sides), reverse=True)
        taps: dict[int, int] = {}
        channels: dict[int, int] = {}
        with torch.no_grad(), _eval_mode(encoder):
            value = torch.zeros(1, *image_shape)
            for index, layer in enumerate(encoder.layers):
                value = layer(value)
                taps[value.shape[-1]], channels[value.shape[-1]] = index, value.shape[1]
        missing = [side for side in self.sides if side not in taps]
        if missing:
            raise ValueError(
                f"The context encoder has no feature map of side {missing} (its maps have "
                f"sides {sorted(taps, reverse=True)}): set context.resolutions to those."
            )
        taps = {side: taps[side] for side in self.sides}
        self.layers = encoder.layers[: max(taps.values()) + 1]
        self.taps = {index: side for side, index in taps.items()}
        self.channels = {side: channels[side] for side in self.sides}

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        distinct = collapse_expanded(pixels, 3)
        value = centred_pixels(distinct.reshape(-1, *pixels.shape[-3:]))
        maps = {}
        for index, layer in enumerate(self.layers):
            value = layer(value)
            if index in self.taps:
                maps[self.taps[index]] = value
        batch = pixels.shape[:-3]
        return tuple(
            maps[side]
            .reshape(*distinct.shape[:-3], *maps[side].shape[1:])
            .expand(*batch, -1, -1, -1)
            for side in self.sides
        )


class ContextCrossAttention(nn.Module):
    """Multi-head cross-attention from a decoder feature map to a context feature map.

    Queries are the ``[N, C, s, s]`` decoder map's positions, keys and values the context
    map's (``[*batch, C_ctx, s_ctx, s_ctx]`` with ``prod(batch) == N``), each with a learned
    positional embedding (zero at start). In training a random ``mask_ratio`` of the context
    tokens is dropped per query map (ContextWM's attention mask) and the attention weights see
    ``dropout``. The layer-normalised attention output is added to the decoder map.

    Args:
        channels (int): channels of the decoder map.
        context_channels (int): channels of the context map.
        side (int): side of the decoder map.
        context_side (int): side of the context map.
        heads (int, optional): attention heads; must divide ``channels``. Defaults to ``4``.
        mask_ratio (float, optional): fraction of context tokens dropped in training.
            Defaults to ``0.75``.
        dropout (float, optional): attention dropout in training. Defaults to ``0.1``.

    Examples:
        >>> attention = ContextCrossAttention(8, 16, side=4, context_side=4, heads=2)
        >>> attention(torch.zeros(6, 8, 4, 4), torch.randn(2, 3, 16, 4, 4)).shape
        torch.Size([6, 8, 4, 4])
    """

    def __init__(
        self,
        channels: int,
        context_channels: int,
        side: int,
        context_side: int,
        heads: int = 4,
        mask_ratio: float = 0.75,
        dropout: float = 0.1,
    ):
        super().__init__()
        if channels % heads:
            raise ValueError(f"{heads} heads do not divide the decoder's {channels} channels.")
        self.heads, self.mask_ratio, self.dropout = heads, mask_ratio, dropout
        self.context_shape = (context_channels, context_side, context_side)
        self.query_position = nn.Parameter(torch.zeros(side * side, channels))
        self.context_position = nn.Parameter(torch.zeros(context_side**2, context_channels))
        self.query = nn.Linear(channels, channels)
        self.key = nn.Linear(context_channels, channels)
        self.value = nn.Linear(context_channels, channels)
        self.out = nn.Linear(channels, channels)
        self.norm = nn.LayerNorm(channels)

    def _context_tokens(self, context: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
        """Keys and values ``[count, tokens, C]``, projected once per distinct context map.

        In training a random ``1 - mask_ratio`` of each query map's tokens is kept; they are
        gathered from the distinct maps' projections, so a map shared by the steps of a clip
        is neither copied nor projected once per step.
        """
        batch = context.shape[:-3]
        if tuple(context.shape[-3:]) != self.context_shape or math.prod(batch) != count:
            raise ValueError(
                f"Context map of shape {tuple(context.shape)}: expected [*batch, "
                f"{', '.join(map(str, self.context_shape))}] with {count} maps in all."
            )
        distinct = collapse_expanded(context, 3)
        shape = distinct.shape[:-3]
        rows = torch.arange(math.prod(shape), device=context.device).reshape(shape)
        rows = rows.expand(batch).reshape(count, 1)
        tokens = distinct.reshape(-1, *self.context_shape).flatten(2).transpose(1, 2)
        tokens = tokens + self.context_position
        key, value = self.key(tokens), self.value(tokens)
        length = tokens.shape[1]
        if self.training and self.mask_ratio:
            kept = max(1, int(length * (1.0 - self.mask_ratio)))
            index = torch.rand(count, length, device=context.device).argsort(-1)[:, :kept]
        else:
            index = torch.arange(length, device=context.device).expand(count, length)
        return key[rows, index], value[rows, index]

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        count, length, channels = tokens.shape
        return tokens.reshape(count, length, self.heads, channels // self.heads).transpose(1, 2)

    def forward(self, decoder_map: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        count, channels, height, width = decoder_map.shape
        if height * width != self.query_position.shape[0]:
            raise ValueError(
                f"Decoder map of side {height}x{width}: this attention was built for "
                f"{self.query_position.shape[0]} positions."
            )
        queries = self.query(decoder_map.flatten(2).transpose(1, 2) + self.query_position)
        key, value = self._context_tokens(context, count)
        attended = F.scaled_dot_product_attention(
            *(self._split_heads(tokens) for tokens in (queries, key, value)),
            dropout_p=self.dropout if self.training else 0.0,
        )
        attended = self.norm(self.out(attended.transpose(1, 2).reshape(count, -1, channels)))
        return decoder_map + attended.transpose(1, 2).reshape(count, channels, height, width)


class ContextualDecoder(nn.Module):
    """A pixel decoder whose feature maps attend to multi-scale context maps.

    Wraps a decoder of :mod:`torchrl_prelar.modules.networks` (the conv decoder or the ResNet
    one: any with ``stem`` and ``layers``) and runs its own layers; the ``s x s`` map is
    handed to a :class:`ContextCrossAttention` with the context map of side ``s`` before the
    first layer with weights that reads it (after a conv stage's activation, or after a ResNet
    stage's upsampling, before its residual blocks).

    Called as ``decoder(state, belief, *context_maps)``: model features ``[*batch, F]``
    (concatenated) and one map ``[*batch, C_s, s, s]`` per side of ``context_channels``, from
    the largest side to the smallest (the order of :class:`MultiScaleEncoder`).

    Args:
        decoder (nn.Module): a decoder with ``stem`` and ``layers``.
        in_features (int): width of the model features.
        context_channels (Mapping[int, int]): channels of the context map of each side.

    Keyword Args:
        heads (int, optional): attention heads. Defaults to ``4``.
        mask_ratio (float, optional): fraction of context tokens dropped in training.
            Defaults to ``0.75``.
        dropout (float, optional): attention dropout in training. Defaults to ``0.1``.

    Raises:
        TypeError: if ``decoder`` has no ``stem`` or ``layers``.
        ValueError: if no layer with weights reads a map of one of the sides.

    Examples:
        >>> from torchrl_prelar.modules.networks import make_conv_decoder
        >>> decoder = ContextualDecoder(make_conv_decoder(12, depth=4), 12, {16: 8, 8: 16}, heads=2)
        >>> maps = torch.zeros(2, 8, 16, 16), torch.zeros(2, 16, 8, 8)
        >>> decoder(torch.zeros(2, 4), torch.zeros(2, 8), *maps).shape
        torch.Size([2, 3, 64, 64])
    """

    def __init__(
        self,
        decoder: nn.Module,
        in_features: int,
        context_channels: Mapping[int, int],
        *,
        heads: int = 4,
        mask_ratio: float = 0.75,
        dropout: float = 0.1,
    ):
        super().__init__()
        if not (hasattr(decoder, "stem") and hasattr(decoder, "layers")):
            raise TypeError(
                f"ContextualDecoder needs a decoder with stem() and layers (the conv or ResNet "
                f"decoders of torchrl_prelar.modules.networks), got {type(decoder).__name__}."
            )
        self.decoder = decoder
        self.sides = sorted(context_channels, reverse=True)
        self._points: dict[int, int] = {}  # layer index -> side attended before it
        attention = {}
        with torch.no_grad(), _eval_mode(decoder):
            value = decoder.stem(torch.zeros(1, in_features))
            for index, layer in enumerate(decoder.layers):
                side = value.shape[-1]
                has_weights = next(layer.parameters(), None) is not None
                if side in context_channels and str(side) not in attention and has_weights:
                    self._points[index] = side
                    attention[str(side)] = ContextCrossAttention(
                        value.shape[1],
                        context_channels[side],
                        side,
                        side,
                        heads,
                        mask_ratio,
                        dropout,
                    )
                value = layer(value)
        missing = [side for side in self.sides if str(side) not in attention]
        if missing:
            raise ValueError(
                f"The decoder has no feature map of side {missing} read by a layer with "
                "weights; set context.resolutions to sides of its stages."
            )
        self.attention = nn.ModuleDict(attention)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        count = len(self.sides)
        if len(inputs) <= count:
            raise TypeError(
                f"ContextualDecoder needs the model features followed by {count} context "
                f"maps (sides {self.sides}), got {len(inputs)} tensors."
            )
        features, maps = inputs[:-count], dict(zip(self.sides, inputs[-count:], strict=True))
        value = features[0] if len(features) == 1 else torch.cat(features, -1)
        batch = value.shape[:-1]
        hidden = self.decoder.stem(value.reshape(-1, value.shape[-1]))
        for index, layer in enumerate(self.decoder.layers):
            side = self._points.get(index)
            if side is not None:
                hidden = self.attention[str(side)](hidden, maps[side])
            hidden = layer(hidden)
        return hidden.reshape(*batch, *hidden.shape[1:])


class _ContextBeforeDecoder:
    """Mixin of a world model whose ``_parts`` chain runs the context modules before the decoder."""

    decoder: TensorDictModuleBase

    def __init__(
        self,
        *args: Any,
        context_frame: ContextFrame,
        context_encoder: TensorDictModule,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.context_frame = context_frame
        self.context_encoder = context_encoder

    @property
    def _parts(self) -> list[TensorDictModuleBase]:
        parts = super()._parts
        index = next(i for i, part in enumerate(parts) if part is self.decoder)
        return [*parts[:index], self.context_frame, self.context_encoder, *parts[index:]]


class ContextWMPretrainModel(_ContextBeforeDecoder, PreLARWorldModel):
    """ContextWM's action-free pre-training model: APV's, with the context read by the decoder.

    Runs the :class:`~torchrl_prelar.modules.PreLARWorldModel` chain (encoder,
    :class:`~torchrl_prelar.baselines.apv.NoAction`, action-free RSSM) and, before the
    decoder, ``context_frame`` (:class:`ContextFrame`) and ``context_encoder`` (a
    :class:`~tensordict.nn.TensorDictModule` of a :class:`MultiScaleEncoder`); the decoder is
    a :class:`ContextualDecoder` reading the state, the belief and the context maps.

    Examples:
        >>> from torchrl_prelar.data.synthetic import moving_square_batch
        >>> model = make_contextwm_pretrain_model()
        >>> out = model(moving_square_batch(2, 4))
        >>> out["next", "reco_pixels"].shape, out["context", "features_8"].shape
        (torch.Size([2, 4, 3, 64, 64]), torch.Size([2, 4, 64, 8, 8]))
    """

    def _decode(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict = self.context_encoder(self.context_frame(tensordict))
        return super()._decode(tensordict)


class ContextWMWorldModel(_ContextBeforeDecoder, APVWorldModel):
    """ContextWM fine-tuning model: APV's stacked RSSMs, the decoder reading the context.

    :class:`~torchrl_prelar.baselines.apv.APVWorldModel` (encoder, action-free RSSM, features,
    new action-conditional RSSM, decoder, reward heads) with ``context_frame`` and
    ``context_encoder`` (pre-trained) run before the decoder. The acting policy and the
    intrinsic bonus are APV's: neither reads the context.

    Examples:
        >>> from tensordict import TensorDict
        >>> model = make_contextwm_world_model(action_dim=4)
        >>> td = TensorDict({"action": torch.zeros(2, 3, 4),
        ...                  "is_init": torch.ones(2, 3, 1, dtype=torch.bool),
        ...                  ("next", "pixels"): torch.zeros(2, 3, 3, 64, 64, dtype=torch.uint8)},
        ...                 [2, 3])
        >>> model(td)["next", "reco_pixels"].shape
        torch.Size([2, 3, 3, 64, 64])
    """


def resolve_contextwm_kwargs(
    *, context: Mapping[str, Any] | None = None, **world_model_kwargs: Any
) -> dict[str, Any]:
    """Every setting of the ContextWM models, defaults filled in (what a checkpoint stores).

    Keyword Args:
        context (Mapping[str, Any], optional): the context settings. Defaults to ``None``.
        **world_model_kwargs: the arguments of
            :func:`~torchrl_prelar.modules.resolve_world_model_kwargs`.

    Returns:
        the world-model settings and the ``"context"`` settings, complete.

    Examples:
        >>> resolve_contextwm_kwargs(context={"heads": 2})["context"]["resolutions"]
        [16, 8]
    """
    settings = resolve_world_model_kwargs(**world_model_kwargs)
    return {**settings, "context": context_settings(context)}


def make_contextwm_pretrain_model(
    *, context: Mapping[str, Any] | None = None, **world_model_kwargs: Any
) -> ContextWMPretrainModel:
    """APV's action-free world model with a context encoder and a contextual decoder.

    The context encoder has the architecture of the encoder and its own weights (ContextWM's
    context encoder has the encoder's depth); the decoder is the world model's, with one
    :class:`ContextCrossAttention` per side of ``context["resolutions"]``.

    Keyword Args:
        context (Mapping[str, Any], optional): the context settings (see the module
            docstring). Defaults to ``None`` (:data:`CONTEXT_DEFAULTS`).
        **world_model_kwargs: the arguments of
            :func:`~torchrl_prelar.baselines.apv.make_action_free_world_model`.

    Examples:
        >>> model = make_contextwm_pretrain_model(context={"resolutions": [8]})
        >>> sorted(model.decoder.module.attention)
        ['8']
    """
    settings = context_settings(context)
    base = make_action_free_world_model(**world_model_kwargs)
    model_settings = resolve_world_model_kwargs(**world_model_kwargs)
    image_shape = base.image_shape
    network = MultiScaleEncoder(
        make_pixel_encoder(
            **model_settings["encoder"], in_channels=image_shape[0], image_size=image_shape[1]
        ),
        settings["resolutions"],
        image_shape,
    )
    context_encoder = TensorDictModule(
        network,
        in_keys=[CONTEXT_PIXELS_KEY],
        out_keys=[context_feature_key(side) for side in network.sides],
    )
    decoder = ContextualDecoder(
        base.decoder.module,
        model_state_size(model_settings["rssm"]),
        network.channels,
        heads=settings["heads"],
        mask_ratio=settings["mask_ratio"],
        dropout=settings["dropout"],
    )
    return ContextWMPretrainModel(
        base.action_model,
        base.encoder,
        base.rssm,
        TensorDictModule(
            decoder,
            in_keys=[*base.decoder.in_keys, *context_encoder.out_keys],
            out_keys=base.decoder.out_keys,
        ),
        image_shape=image_shape,
        validate_inputs=base.validate_inputs,
        activation_checkpointing=base.activation_checkpointing,
        context_frame=ContextFrame(settings["frame"], settings["shift"]),
        context_encoder=context_encoder,
    )


def make_contextwm_world_model(
    action_dim: int = 4,
    *,
    action_free: ContextWMPretrainModel | None = None,
    reward_keys: list[NestedKey] | None = None,
    context: Mapping[str, Any] | None = None,
    **world_model_kwargs: Any,
) -> ContextWMWorldModel:
    """Stack a new action-conditional RSSM on a ContextWM pre-training model (as APV does).

    Args:
        action_dim (int, optional): real action size. Defaults to ``4``.

    Keyword Args:
        action_free (ContextWMPretrainModel, optional): the (pre-trained) model of
            :func:`make_contextwm_pretrain_model`; its encoder, RSSM, context encoder and
            decoder are taken over. Defaults to ``None``: a fresh one of ``context`` and
            ``world_model_kwargs``.
        reward_keys (list of NestedKey, optional): one reward head per key. Defaults to
            ``None`` (no reward head).
        context (Mapping[str, Any], optional): the context settings of a fresh
            ``action_free`` model. Defaults to ``None``.
        **world_model_kwargs: the arguments of

            :func:`~torchrl_prelar.baselines.apv.make_apv_world_model`.

    Examples:
        >>> model = make_contextwm_world_model(action_dim=4,
        ...                                    rssm={"categoricals": 8, "classes": 8})
        >>> model.rssm_prior.action_state_projector[0].in_features  # 64 stoch + 4 action
        68
    """
    if action_free is None:
        action_free = make_contextwm_pretrain_model(context=context, **world_model_kwargs)
    stacked = make_apv_world_model(
        action_dim, action_free=action_free, reward_keys=reward_keys, **world_model_kwargs
    )
    return ContextWMWorldModel(
        stacked.encoder.module,
        stacked.action_free,
        stacked.rssm,
        stacked.decoder,
        list(stacked.reward_heads),
        image_shape=stacked.image_shape,
        validate_inputs=stacked.validate_inputs,
        context_frame=action_free.context_frame,
        context_encoder=action_free.context_encoder,
    )


_Builders = tuple[Callable[..., PreLARWorldModel], Callable[..., APVWorldModel]]
#: ``finetune.init`` values that pre-train an action-free model and stack an RSSM on it:
#: (pre-training model builder, fine-tuning model builder), both taking the world-model
#: arguments (and ContextWM's ``context``).
STACKED_BASELINES: dict[str, _Builders] = {
    "apv": (make_action_free_world_model, make_apv_world_model),
    "contextwm": (make_contextwm_pretrain_model, make_contextwm_world_model),
}
