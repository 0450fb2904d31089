"""Modules that write ``"latent_action"``: the only part that changes between the two stages.

* :class:`LatentActionModel` (pre-training): inverse dynamics q(a~ | o_t, o_{t+1}) on video.
* :class:`ActionEncoder` (fine-tuning): the real action mapped into the same latent space.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import (
    InteractionType,
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    TensorDictModule,
    TensorDictModuleBase,
    add_custom_mapping,
)
from tensordict.nn.distributions import Delta
from tensordict.utils import NestedKey
from torch import distributions as D
from torch import nn
from torchrl.modules import MLP, IndependentNormal, OneHotCategorical
from torchrl.modules.distributions import ReparamGradientStrategy

from torchrl_prelar.modules.pixels import centred_pixels

OutputType = Literal["gaussian", "deterministic", "discrete"]
InputMode = Literal["concat", "difference", "embedding", "embedding_difference"]
#: Input modes that read the world model's encoder embeddings instead of frames.
EMBEDDING_MODES = ("embedding", "embedding_difference")

_DEFAULT_OUT_KEYS: dict[str, list[NestedKey]] = {
    "gaussian": ["latent_action", "latent_action_loc", "latent_action_scale"],
    "deterministic": ["latent_action"],
    "discrete": ["latent_action", "latent_action_logits"],
}
_ONE_DRAW = torch.Size()
#: Name of the reference's std mapping, ``2 * sigmoid(raw / 2)``, among tensordict's mappings.
SCALE_MAPPING = "prelar_sigmoid_scale"


def _sigmoid_scale(raw: torch.Tensor) -> torch.Tensor:
    return 2 * torch.sigmoid(raw / 2)


add_custom_mapping(SCALE_MAPPING, _sigmoid_scale)


def _check_sizes(owner: str, **sizes: int) -> None:
    """Raise a ``ValueError`` naming the first of ``sizes`` that is not a positive integer."""
    for name, size in sizes.items():
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"{owner}: {name} must be an integer >= 1, got {size!r}.")


def latent_action_trunk_channels(input_mode: InputMode, window: int, channels: int = 3) -> int:
    """Channels the latent action model's trunk reads for a window of ``window`` frames.

    Args:
        input_mode (str): ``"concat"`` or ``"difference"``.
        window (int): frames per inference, at least 2.
        channels (int, optional): channels of a frame. Defaults to ``3``.

    Raises:
        ValueError: if ``window < 2`` or ``input_mode`` does not read frames.

    Examples:
        >>> latent_action_trunk_channels("concat", 2), latent_action_trunk_channels("difference", 3)
        (6, 6)
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 frames, got {window}.")
    if input_mode == "concat":
        return channels * window
    if input_mode == "difference":
        return channels * (window - 1)
    if input_mode in EMBEDDING_MODES:
        raise ValueError(f"input_mode={input_mode!r} reads encoder embeddings, not frames.")
    raise ValueError(
        "input_mode must be 'concat', 'difference', 'embedding' or 'embedding_difference', "
        f"got {input_mode!r}."
    )


def use_circular_padding(module: nn.Module) -> nn.Module:
    """Switch every 2-d convolution of ``module`` to circular padding, in place.

    For frames that live on a torus (synthetic toys), a trunk with circular padding and
    spatial mean pooling (``trunk.pool: mean``) gives the same features when the content
    is shifted by a multiple of the trunk's total stride: a latent action model built on it
    cannot tell *where* things are, only how o_{t+1} differs from o_t. Zero padding (the
    default everywhere) lets the borders give the position away.

    Args:
        module (nn.Module): the network, modified in place.

    Returns:
        ``module``.

    Examples:
        >>> from torchrl_prelar.modules.networks import make_conv_encoder
        >>> trunk = use_circular_padding(make_conv_encoder(6, depth=4, mults=(1, 2), pool="mean"))
        >>> frames = torch.randn(1, 6, 16, 16)
        >>> torch.allclose(trunk(frames), trunk(frames.roll((4, -8), (-2, -1))), atol=1e-5)
        True
    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            layer.padding_mode = "circular"
    return module


def straight_through_sample(logits: torch.Tensor) -> torch.Tensor:
    """One-hot sample of ``[..., categoricals, classes]`` logits, gradients through the probs.

    Flattened to ``[..., categoricals * classes]``, the layout of TorchRL's RSSM states.

    Args:
        logits (torch.Tensor): categorical logits, ``[..., categoricals, classes]``.

    Examples:
        >>> sample = straight_through_sample(torch.zeros(2, 4, 8))
        >>> sample.shape, sample.sum(-1)
        (torch.Size([2, 32]), tensor([4., 4.]))
    """
    probs = logits.softmax(-1)
    index = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1)
    hard = torch.zeros_like(probs).reshape(-1, probs.shape[-1]).scatter_(-1, index, 1.0)
    return (probs + (hard.view_as(probs) - probs).detach()).flatten(-2)


class OneHotCategoricals(D.Distribution):
    """Independent one-hot categoricals with flat samples: the discrete latent action.

    ``logits`` ``[..., categoricals, classes]`` give TorchRL's
    :class:`~torchrl.modules.OneHotCategorical` per categorical; samples, modes and
    ``log_prob``'s values are their one-hot vectors flattened to ``[..., categoricals *
    classes]`` (the layout the RSSM reads). ``rsample`` is exactly one-hot with pass-through
    gradients to the probabilities (``has_rsample``, so that a
    :class:`~tensordict.nn.ProbabilisticTensorDictModule` draws with it); the mode (and
    ``deterministic_sample``) is the one-hot arg-max, the mean the probabilities.

    Args:
        logits (torch.Tensor): logits, ``[..., categoricals, classes]``.
        validate_args (bool, optional): as in :class:`torch.distributions.Distribution`.
            Defaults to ``None``.

    Examples:
        >>> dist = OneHotCategoricals(torch.zeros(3, 4, 2))
        >>> sample = dist.rsample()
        >>> dist.batch_shape, dist.event_shape, sample.shape, sample.sum(-1)
        (torch.Size([3]), torch.Size([8]), torch.Size([3, 8]), tensor([4., 4., 4.]))
        >>> dist.log_prob(sample)
        tensor([-2.7726, -2.7726, -2.7726])
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, logits: torch.Tensor, validate_args: bool | None = None):
        self.categoricals = OneHotCategorical(
            logits=logits, grad_method=ReparamGradientStrategy.PassThrough
        )
        self._dtype = logits.dtype
        super().__init__(
            batch_shape=logits.shape[:-2],
            event_shape=torch.Size([logits.shape[-2] * logits.shape[-1]]),
            validate_args=validate_args,
        )

    @property
    def logits(self) -> torch.Tensor:
        """Normalised logits ``[..., categoricals, classes]``."""
        return self.categoricals.logits

    @property
    def probs(self) -> torch.Tensor:
        """Probabilities ``[..., categoricals, classes]``."""
        return self.categoricals.probs

    @property
    def mean(self) -> torch.Tensor:
        return self.probs.flatten(-2)

    @property
    def mode(self) -> torch.Tensor:
        return self.categoricals.mode.to(self._dtype).flatten(-2)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode

    def sample(self, sample_shape: torch.Size = _ONE_DRAW) -> torch.Tensor:
        return self.categoricals.sample(sample_shape).to(self._dtype).flatten(-2)

    def rsample(self, sample_shape: torch.Size = _ONE_DRAW) -> torch.Tensor:
        probs = self.probs
        hard = self.categoricals.sample(sample_shape).to(probs.dtype)
        return (hard + (probs - probs.detach())).flatten(-2)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        one_hot = value.unflatten(-1, self.logits.shape[-2:])
        return self.categoricals.log_prob(one_hot).sum(-1)

    def entropy(self) -> torch.Tensor:
        return self.categoricals.entropy().sum(-1)


class ReparamDelta(Delta):
    """tensordict's :class:`~tensordict.nn.distributions.Delta`, drawn with ``rsample``.

    ``has_rsample`` is set, so a :class:`~tensordict.nn.ProbabilisticTensorDictModule`
    sampling at random returns the code with its gradient (``Delta.sample`` detaches it).

    Examples:
        >>> code = torch.ones(2, 3, requires_grad=True)
        >>> ReparamDelta(code).rsample().requires_grad
        True
    """

    has_rsample = True


#: Per output type: the distribution, and the names of its parameters in order.
_DISTRIBUTIONS: dict[str, tuple[type[D.Distribution], tuple[str, ...], dict]] = {
    "gaussian": (IndependentNormal, ("loc", "scale"), {"validate_args": False}),
    "discrete": (OneHotCategoricals, ("logits",), {}),
    "deterministic": (ReparamDelta, ("param",), {}),
}


def shift_together(frames: torch.Tensor, shift: int) -> torch.Tensor:
    """Shift each ``[C, H, W]`` stack of ``frames`` by its own random offset.

    Each stack moves by up to ``shift`` pixels per axis: replicate-pad by ``shift``, then
    crop. The channels of one stack (the frames of one transition) move together.

    Args:
        frames (torch.Tensor): frames, ``[*B, C, H, W]``.
        shift (int): the largest offset, in pixels; ``0`` returns ``frames`` unchanged.

    Examples:
        >>> frames = torch.arange(32.0).reshape(1, 2, 4, 4)
        >>> shifted = shift_together(frames, 1)
        >>> difference = shifted[0, 1] - shifted[0, 0]  # the channels moved together
        >>> shifted.shape, bool((difference == 16.0).all())
        (torch.Size([1, 2, 4, 4]), True)
    """
    if shift == 0:
        return frames
    *batch, channels, height, width = frames.shape
    flat = frames.reshape(-1, channels, height, width)
    padded = nn.functional.pad(flat, (shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (flat.shape[0], 2), device=frames.device)
    rows = offsets[:, :1] + torch.arange(height, device=frames.device)  # [N, H]
    cols = offsets[:, 1:] + torch.arange(width, device=frames.device)  # [N, W]
    index = torch.arange(flat.shape[0], device=frames.device)[:, None, None]
    cropped = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2).reshape(*batch, channels, height, width)


class EmbeddingPair(nn.Module):
    """Trunk of the embedding input modes of :class:`LatentActionModel`.

    Reads the two embeddings side by side (``[..., 2 * embed_dim]``, o_t's first) and hands
    on both (``"concat"``, the ``"embedding"`` mode) or the change e(o_{t+1}) - e(o_t)
    (``"difference"``, the ``"embedding_difference"`` mode, as in LAPA: what stays the same
    between the frames, such as where the hand is, cancels out).

    Args:
        embed_dim (int): width of one embedding.
        combine (str, optional): ``"concat"`` or ``"difference"``. Defaults to ``"concat"``.

    Examples:

        >>> EmbeddingPair(4)(torch.zeros(2, 8)).shape
        torch.Size([2, 8])
        >>> EmbeddingPair(2, combine="difference")(torch.tensor([[1.0, 2.0, 4.0, 3.0]]))
        tensor([[3., 1.]])
    """

    def __init__(self, embed_dim: int, combine: Literal["concat", "difference"] = "concat"):
        super().__init__()
        if combine not in ("concat", "difference"):
            raise ValueError(f"combine must be 'concat' or 'difference', got {combine!r}.")
        self.combine = combine
        self.output_features = 2 * embed_dim if combine == "concat" else embed_dim

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        if self.combine == "concat":
            return pair
        current, following = pair.chunk(2, dim=-1)
        return following - current


class LatentActionModel(TensorDictModuleBase):
    """Inverse dynamics q(a~_t | o_t, o_{t+1}) that writes a latent action for every transition.

    Reads ``"pixels"`` (o_t) and ``("next", "pixels")`` (o_{t+1}), uint8 or centred floats,
    and writes ``"latent_action"`` plus the parameters of its distribution:
    ``"latent_action_loc"`` and ``"latent_action_scale"`` (Gaussian),
    ``"latent_action_logits"`` (discrete), nothing more (deterministic). The latent action at
    step ``t`` feeds the RSSM prior that predicts o_{t+1}, exactly where TorchRL's Dreamer
    feeds the real action ``a_t``.

    The trunk (an image encoder over the stacked frames) gives a feature vector, then
    ``Linear(hidden) -> ELU -> Linear`` (the ``head``) gives the distribution's parameters,
    which ``sampler``, a :class:`~tensordict.nn.ProbabilisticTensorDictModule`, turns into
    the latent action:

    * ``"gaussian"``: TorchRL's :class:`~torchrl.modules.IndependentNormal`; the head ends in
      tensordict's :class:`~tensordict.nn.NormalParamExtractor` with the reference's
      ``std = 2 * sigmoid(raw / 2)`` (:data:`SCALE_MAPPING`).
    * ``"deterministic"``: the code itself (:class:`ReparamDelta`; the paper's "without
      action learning" ablation).
    * ``"discrete"``: :class:`OneHotCategoricals`, ``num_categoricals`` one-hot categoricals
      of ``action_dim // num_categoricals`` classes (TorchRL's
      :class:`~torchrl.modules.OneHotCategorical`), pass-through gradients.

    Sample or mode follows the interaction type (:func:`~tensordict.nn.set_interaction_type`):
    ``"random"`` draws a reparameterised sample; ``"deterministic"`` and ``"mode"`` give the
    mode (the Gaussian's mean, the discrete arg-max, the code), ``"mean"`` the mean (for the
    discrete output, the probabilities). Without an interaction type set, the default follows
    the module's mode: random in ``train()``, deterministic in ``eval()``
    (``sampler.default_interaction_type``). :meth:`get_dist` exposes the distribution.

    The module is not a :class:`~tensordict.nn.ProbabilisticTensorDictSequential` itself: that
    would move the networks under ``module.0.module.``. Composed of ``trunk``, ``head`` and a
    parameter-free ``sampler``, its state-dict keys are ``trunk.*`` and ``head.*``, those of
    the pre-trained checkpoints.

    Args:
        trunk (nn.Module): image encoder with ``output_features``, reading
            :func:`latent_action_trunk_channels` channels (an :class:`EmbeddingPair` for the
            embedding input modes).
        action_dim (int, optional): latent action size. Defaults to ``64`` (the paper's).
        hidden_dim (int, optional): width of the head's hidden layer. Defaults to ``1024``
            (the paper's).
        output_type (str, optional): ``"gaussian"``, ``"deterministic"`` or ``"discrete"``.
            Defaults to ``"gaussian"``.
        input_mode (str, optional): ``"concat"`` stacks the frames on channels;
            ``"difference"`` stacks the differences of consecutive frames; ``"embedding"``
            reads the world model's own encoder embeddings of o_t and o_{t+1}
            (``"encoded_latents"`` and ``("next", "encoded_latents")``) instead of frames,
            with an :class:`EmbeddingPair` trunk: no second image network (about a third
            fewer convolution FLOPs at the ``paper`` size); the world model supplies the
            embeddings. ``"embedding_difference"`` reads the same embeddings and keeps only
            their change e(o_{t+1}) - e(o_t). Defaults to ``"concat"``.
        window (int, optional): frames per inference, ending at o_{t+1}; ``2`` is
            (o_t, o_{t+1}). With ``window > 2`` earlier frames are taken from the clip,
            repeating its first frame where the window reaches before it; inputs then need a
            time dimension. Defaults to ``2``.
        shift (int, optional): in training mode, shift the frames of each transition together
            by a random offset of up to ``shift`` pixels in each direction (replicate padding,
            then a crop, as DrQ), so that where things are in the image is less reliable to
            the code than how they move between the frames; ``0`` is off. Frame inputs only.
            Defaults to ``0``.
        num_categoricals (int, optional): categoricals of the discrete output; must divide
            ``action_dim``. Defaults to ``8``.
        in_keys (list of NestedKey, optional): ``[o_t, o_{t+1}]`` keys. Defaults to
            ``["pixels", ("next", "pixels")]``, or ``["encoded_latents",
            ("next", "encoded_latents")]`` for the embedding input modes.
        out_keys (list of NestedKey, optional): ``[latent_action, loc, scale]`` (Gaussian),
            ``[latent_action]`` (deterministic) or ``[latent_action, logits]`` (discrete).
            Defaults to the key names listed above.

    Raises:
        ValueError: if ``output_type``, ``input_mode``, ``window``, ``shift`` or the number
            of keys is invalid, or ``num_categoricals`` does not divide ``action_dim``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from tensordict.nn import set_interaction_type
        >>> from torchrl_prelar.modules.networks import make_conv_encoder
        >>> model = LatentActionModel(make_conv_encoder(6, depth=4, mults=(1, 2)), action_dim=8)
        >>> td = TensorDict({"pixels": torch.zeros(2, 5, 3, 64, 64, dtype=torch.uint8),
        ...                  "next": {"pixels": torch.zeros(2, 5, 3, 64, 64, dtype=torch.uint8)}},
        ...                 [2, 5])
        >>> model(td)["latent_action"].shape
        torch.Size([2, 5, 8])
        >>> with set_interaction_type("mode"):
        ...     td = model(td)
        >>> torch.equal(td["latent_action"], td["latent_action_loc"])
        True
    """

    def __init__(
        self,
        trunk: nn.Module,
        action_dim: int = 64,
        hidden_dim: int = 1024,
        output_type: OutputType = "gaussian",
        input_mode: InputMode = "concat",
        window: int = 2,
        shift: int = 0,
        num_categoricals: int = 8,
        in_keys: list[NestedKey] | None = None,
        out_keys: list[NestedKey] | None = None,
    ):
        super().__init__()
        _check_sizes(
            "LatentActionModel",
            action_dim=action_dim,
            hidden_dim=hidden_dim,
            num_categoricals=num_categoricals,
        )
        if output_type not in ("gaussian", "deterministic", "discrete"):
            raise ValueError(
                "output_type must be 'gaussian', 'deterministic' or 'discrete', "
                f"got {output_type!r}."
            )
        if output_type == "discrete" and action_dim % num_categoricals:
            raise ValueError(
                f"action_dim={action_dim} must be a multiple of "
                f"num_categoricals={num_categoricals}."
            )
        if input_mode in EMBEDDING_MODES:
            if window != 2:
                raise ValueError(f"input_mode={input_mode!r} supports window=2 only.")
        else:
            latent_action_trunk_channels(input_mode, window)
        self.trunk = trunk
        self.output_type = output_type
        self.input_mode = input_mode
        self.window = window
        if shift < 0 or (shift and input_mode in EMBEDDING_MODES):
            raise ValueError(
                f"shift must be >= 0 and applies to frame inputs only, got shift={shift} with "
                f"input_mode={input_mode!r}."
            )
        self.shift = shift
        self.action_dim = action_dim
        self.num_categoricals = num_categoricals
        head_out = 2 * action_dim if output_type == "gaussian" else action_dim
        head: list[nn.Module] = [
            nn.Linear(trunk.output_features, hidden_dim),
            nn.ELU(),
            nn.Linear(hidden_dim, head_out),
        ]
        if output_type == "gaussian":
            head.append(NormalParamExtractor(scale_mapping=SCALE_MAPPING, scale_lb=0.0))
        self.head = nn.Sequential(*head)
        default_in_keys = (
            ["encoded_latents", ("next", "encoded_latents")]
            if input_mode in EMBEDDING_MODES
            else ["pixels", ("next", "pixels")]
        )
        self.in_keys = default_in_keys if in_keys is None else list(in_keys)
        self.out_keys = list(_DEFAULT_OUT_KEYS[output_type]) if out_keys is None else list(out_keys)
        if len(self.in_keys) != 2 or len(self.out_keys) != len(_DEFAULT_OUT_KEYS[output_type]):
            raise ValueError(
                f"Expected two in_keys and {len(_DEFAULT_OUT_KEYS[output_type])} out_keys for "
                f"output_type={output_type!r} (defaults: {_DEFAULT_OUT_KEYS[output_type]})."
            )
        distribution_class, parameter_names, distribution_kwargs = _DISTRIBUTIONS[output_type]
        sample_key, *parameter_keys = self.out_keys
        self.sampler = ProbabilisticTensorDictModule(
            in_keys=dict(zip(parameter_names, parameter_keys or [sample_key], strict=True)),
            out_keys=[sample_key],
            distribution_class=distribution_class,
            distribution_kwargs=distribution_kwargs,
            default_interaction_type=InteractionType.RANDOM,
        )

    def train(self, mode: bool = True) -> LatentActionModel:
        """Set the training mode; the sampler's default interaction type follows it.

        Args:
            mode (bool, optional): training (random samples) or eval (the mode). Defaults to
                ``True``.
        """

        super().train(mode)
        self.sampler.default_interaction_type = (
            InteractionType.RANDOM if mode else InteractionType.DETERMINISTIC
        )
        return self

    def _frames(self, pixels: torch.Tensor, next_pixels: torch.Tensor) -> torch.Tensor:
        """Stack each transition's window of frames on the channel dim: [*B, T, k*C, H, W]."""
        if self.window == 2:
            frames = torch.stack([pixels, next_pixels], -4)
        else:
            if pixels.ndim < 5:
                raise ValueError(
                    f"window={self.window} needs a time dimension: expected pixels of shape "
                    f"[*batch, T, C, H, W], got {tuple(pixels.shape)}."
                )
            clip = torch.cat([pixels[..., :1, :, :, :], next_pixels], -4)
            steps = pixels.shape[-4]
            offsets = torch.arange(self.window, device=pixels.device) - (self.window - 2)
            index = (torch.arange(steps, device=pixels.device)[:, None] + offsets).clamp_min(0)
            frames = clip[..., index.flatten(), :, :, :]
            frames = frames.unflatten(-4, (steps, self.window))
        if self.input_mode == "difference":
            frames = frames[..., 1:, :, :, :] - frames[..., :-1, :, :, :]
        return frames.flatten(-4, -3)

    def _parameters_of(
        self, pixels: torch.Tensor, next_pixels: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """``(loc, scale)``, ``(logits,)`` or ``(code,)`` for o_t and o_{t+1}."""
        if self.input_mode in EMBEDDING_MODES:
            inputs = torch.cat([pixels, next_pixels], -1)
        else:  # centred before stacking: a difference of uint8 frames would wrap around
            inputs = self._frames(centred_pixels(pixels), centred_pixels(next_pixels))
            if self.shift and self.training:
                inputs = shift_together(inputs, self.shift)
        out = self.head(self.trunk(inputs))
        if self.output_type == "gaussian":
            return out
        if self.output_type == "discrete":
            return (out.unflatten(-1, (self.num_categoricals, -1)),)
        return (out,)

    def infer(
        self, pixels: torch.Tensor, next_pixels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return ``(latent_action, loc or logits, scale)`` for o_t and o_{t+1}, as
        :meth:`forward` writes them (under the same interaction type).

        Entries an output type does not have are ``None``.

        Args:
            pixels (torch.Tensor): o_t, a frame (or its embedding in the embedding input
                modes).
            next_pixels (torch.Tensor): o_{t+1}, likewise.

        Examples:
            >>> from torchrl_prelar.modules.networks import make_conv_encoder
            >>> model = LatentActionModel(make_conv_encoder(6, depth=4, mults=(1, 2)), 8).eval()
            >>> frames = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
            >>> latent_action, loc, scale = model.infer(frames, frames)
            >>> torch.equal(latent_action, loc), scale.shape
            (True, torch.Size([2, 8]))
        """
        inputs = TensorDict(dict(zip(self.in_keys, (pixels, next_pixels), strict=True)))
        out = self(inputs)
        values = [out.get(key) for key in self.out_keys]
        return tuple(values + [None] * (3 - len(values)))

    def distribution(self, *params: torch.Tensor) -> D.Distribution:
        """The latent action's distribution given its parameters (as :meth:`infer` returns
        them, or as read from :attr:`out_keys`): an
        :class:`~torchrl.modules.IndependentNormal` (``loc, scale``), the
        :class:`OneHotCategoricals` of ``logits`` ``[..., categoricals, classes]`` (samples
        ``[..., categoricals * classes]``, the latent action itself), or a
        :class:`ReparamDelta` at the code (deterministic). ``sampler`` draws the latent action
        from this distribution.

        Args:
            *params (torch.Tensor): the distribution's parameters, in the order of
                :attr:`out_keys` after the latent action.

        Examples:
            >>> from torchrl_prelar.modules.networks import make_conv_encoder
            >>> model = LatentActionModel(make_conv_encoder(6, depth=4, mults=(1, 2)), 8)
            >>> dist = model.distribution(torch.zeros(3, 8), torch.ones(3, 8))
            >>> dist.rsample().shape, dist.log_prob(torch.zeros(3, 8)).shape
            (torch.Size([3, 8]), torch.Size([3]))
        """
        sampler = self.sampler
        return sampler.get_dist(TensorDict(dict(zip(sampler.in_keys, params, strict=True))))

    def get_dist(self, tensordict: TensorDictBase) -> D.Distribution:
        """The latent action's distribution for the transitions of ``tensordict`` (read from
        :attr:`in_keys`, nothing written), as TorchRL's probabilistic modules expose theirs.

        Examples:
            >>> from tensordict import TensorDict
            >>> from torchrl_prelar.modules.networks import make_conv_encoder
            >>> model = LatentActionModel(make_conv_encoder(6, depth=4, mults=(1, 2)), 8)
            >>> td = TensorDict({"pixels": torch.zeros(2, 3, 64, 64),
            ...                  "next": {"pixels": torch.zeros(2, 3, 64, 64)}}, [2])
            >>> dist = model.get_dist(td)
            >>> dist.batch_shape, dist.event_shape
            (torch.Size([2]), torch.Size([8]))
        """
        pixels, next_pixels = (tensordict.get(key) for key in self.in_keys)
        return self.distribution(*self._parameters_of(pixels, next_pixels))

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        pixels, next_pixels = (tensordict.get(key) for key in self.in_keys)
        params = self._parameters_of(pixels, next_pixels)
        for key, value in zip(self.sampler.in_keys, params, strict=True):
            tensordict.set(key, value)
        return self.sampler(tensordict)


class ActionEncoder(TensorDictModule):
    """Deterministic MLP mapping the real action into the latent action space.

    Used at fine-tuning in place of :class:`LatentActionModel`: it reads ``"action"`` and
    writes ``"latent_action"``, the key the pre-trained RSSM already reads. With
    ``identity=True`` it writes the real action unchanged: an RSSM built for ``action_dim``
    then reads the action itself, as DreamerV2's does.

    Args:
        action_dim (int): real action size (4 for Meta-world).
        latent_dim (int, optional): latent action size; must match the pre-trained RSSM.
            Defaults to ``64`` (the paper's).
        hidden_dim (int, optional): hidden width. Defaults to ``1024`` (the paper's).
        depth (int, optional): number of hidden layers. Defaults to ``1``.
        identity (bool, optional): no layers: the latent action is the real action
            (``latent_dim`` must equal ``action_dim``; ``hidden_dim`` and ``depth`` are not
            used). Defaults to ``False``.
        in_keys (list of NestedKey, optional): the real action's key. Defaults to
            ``["action"]``.
        out_keys (list of NestedKey, optional): the latent action's key. Defaults to
            ``["latent_action"]``.

    Examples:
        >>> from tensordict import TensorDict
        >>> encoder = ActionEncoder(4, latent_dim=8, hidden_dim=16)
        >>> encoder(TensorDict({"action": torch.zeros(3, 4)}, [3]))["latent_action"].shape
        torch.Size([3, 8])
        >>> ActionEncoder(4, latent_dim=4, identity=True)(
        ...     TensorDict({"action": torch.ones(3, 4)}, [3]))["latent_action"][0]
        tensor([1., 1., 1., 1.])
    """

    def __init__(
        self,
        action_dim: int,
        latent_dim: int = 64,
        hidden_dim: int = 1024,
        depth: int = 1,
        identity: bool = False,
        in_keys: list[NestedKey] | None = None,
        out_keys: list[NestedKey] | None = None,
    ):
        _check_sizes("ActionEncoder", action_dim=action_dim, latent_dim=latent_dim)
        if not identity:
            _check_sizes("ActionEncoder", hidden_dim=hidden_dim, depth=depth)
        if identity and latent_dim != action_dim:
            raise ValueError(
                f"An identity ActionEncoder writes the {action_dim}-d real action as the "
                f"latent action: latent_dim must be {action_dim}, got {latent_dim}."
            )
        network = (
            nn.Identity()
            if identity
            else MLP(
                in_features=action_dim,
                out_features=latent_dim,
                num_cells=[hidden_dim] * depth,
                activation_class=nn.ELU,
            )
        )
        super().__init__(
            network,
            in_keys=["action"] if in_keys is None else in_keys,
            out_keys=["latent_action"] if out_keys is None else out_keys,
        )
        self.action_dim = action_dim

    def forward(self, *args: Any, **kwargs: Any) -> TensorDictBase | torch.Tensor:
        """Write the latent action of the real action (a TensorDict, or the action tensor as
        any ``TensorDictModule`` takes it); an action of another width is refused with a
        message naming its key."""
        action = args[0] if args else None
        if isinstance(action, TensorDictBase):
            action = action.get(self.in_keys[0], None)
        if isinstance(action, torch.Tensor) and action.shape[-1:] != (self.action_dim,):
            raise ValueError(
                f"{self.in_keys[0]!r} has shape {tuple(action.shape)}: this ActionEncoder "
                f"reads actions of width {self.action_dim} (the env's action size)."
            )
        return super().forward(*args, **kwargs)
