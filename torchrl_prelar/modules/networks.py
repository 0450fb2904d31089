"""Pixel encoders and decoders for 64x64 frames in [-0.5, 0.5].

Two families:

* :class:`ResNetEncoder` / :class:`ResNetDecoder`: the reference ("paper") ResNet-style
  networks of PreLAR (stride-2 stem, residual stages with BatchNorm, average pooling /
  nearest upsampling).
* :func:`make_conv_encoder` / :func:`make_conv_decoder`: TorchRL's
  :class:`~torchrl.modules.DreamerV3ImageEncoder` / :class:`~torchrl.modules.DreamerV3ImageDecoder`
  adapted to centred pixels, for the CPU-sized models.

All encoders map ``[*batch, C, H, W]`` frames to ``[*batch, features]``: uint8 frames are
centred by :func:`~torchrl_prelar.modules.pixels.centred_pixels` on the way in (the one
conversion), float frames are read as they are, in [-0.5, 0.5]. All decoders map
``[*batch, features]`` to ``[*batch, C, H, W]`` predictions in [-0.5, 0.5]. The TorchRL networks
run their ``layers`` on the centred frames directly: TorchRL's own ``forward`` would centre
[0, 1] frames a second time (and its decoder add 0.5 that we would take off again).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchrl.modules import DreamerV3ImageDecoder, DreamerV3ImageEncoder

from torchrl_prelar.modules.pixels import centred_pixels


def _flatten_batch(fn, value: torch.Tensor, event_dims: int) -> torch.Tensor:
    """Apply ``fn`` to ``value`` with all leading batch dims folded into one."""
    batch_shape = value.shape[: value.ndim - event_dims]
    out = fn(value.reshape(-1, *value.shape[value.ndim - event_dims :]))
    return out.reshape(*batch_shape, *out.shape[1:])


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and ELU and a (projected) skip connection.

    With ``checkpointed`` set (and gradients on, in training mode) the block keeps only its
    input for backward and recomputes its activations there, one block at a time.

    Args:
        in_channels (int): input channels.
        out_channels (int): output channels; the skip connection is a 1x1 convolution when
            they differ from ``in_channels``.

    Examples:
        >>> block = ResidualBlock(8, 16)
        >>> block(torch.zeros(2, 8, 4, 4)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ELU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )
        self.activation = nn.ELU()
        self.checkpointed = False

    def _block(self, value: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(value) + self.skip(value))

    def forward(self, value: torch.Tensor) -> torch.Tensor:
        if self.checkpointed and self.training and torch.is_grad_enabled():
            return checkpoint(self._block, value, use_reentrant=False)
        return self._block(value)


class ResNetEncoder(nn.Module):
    """Reference PreLAR image encoder: 64x64 frames to a ``widths[-1] x 4 x 4`` embedding.

    Reads uint8 frames or centred floats (see the module docstring).

    A stride-2 3x3 stem (``in_channels -> widths[0]``, ELU), then one stage per width of
    ``blocks_per_stage`` residual blocks followed by 2x2 average pooling. With the default
    widths (48, 96, 192) a 64x64 frame gives a 3072-d embedding (1.56M parameters).

    Args:
        in_channels (int, optional): input channels (3 for RGB, 6 for a concatenated frame
            pair). Defaults to ``3``.
        widths (tuple of int, optional): channels of each residual stage. Defaults to
            ``(48, 96, 192)``.
        blocks_per_stage (int, optional): residual blocks per stage. Defaults to ``2``.
        image_size (int, optional): input height and width. Defaults to ``64``.
        pool (str, optional): ``"flatten"`` the last feature map (reference) or average it
            over space (``"mean"``: features that do not depend on where things are).
            Defaults to ``"flatten"``.

    Examples:
        >>> encoder = ResNetEncoder(widths=(8, 8, 16))
        >>> encoder(torch.zeros(2, 5, 3, 64, 64)).shape
        torch.Size([2, 5, 256])
        >>> encoder.output_features
        256
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] = (48, 96, 192),
        blocks_per_stage: int = 2,
        image_size: int = 64,
        pool: str = "flatten",
    ):
        super().__init__()
        self.pool = _check_pool(pool)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, widths[0], 3, stride=2, padding=1),
            nn.ELU(),
        ]
        channels = widths[0]
        for width in widths:
            for _ in range(blocks_per_stage):
                layers.append(ResidualBlock(channels, width))
                channels = width
            layers.append(nn.AvgPool2d(2))
        self.layers = nn.Sequential(*layers)
        side = 1 if pool == "mean" else image_size // 2 ** (len(widths) + 1)
        self.output_features = widths[-1] * side * side

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.layers(pixels)
        return features.mean((-2, -1)) if self.pool == "mean" else features.flatten(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _flatten_batch(self._features, centred_pixels(pixels), 3)


class ResNetDecoder(nn.Module):
    """Reference PreLAR image decoder: features to a ``3 x 64 x 64`` mean image.

    ``Linear(in_features -> widths[0] * 4 * 4)``, then one stage per width transition of
    nearest-neighbour 2x upsampling and two residual blocks, then a stride-2 transposed
    convolution to the output channels. Predictions live in the [-0.5, 0.5] pixel space.

    Args:
        in_features (int): size of the model state ``[stoch, deter]``.
        widths (tuple of int, optional): channels from the 4x4 map down to the last stage.
            Defaults to ``(192, 96, 48, 24)``.
        out_channels (int, optional): image channels. Defaults to ``3``.
        image_size (int, optional): output height and width. Defaults to ``64``.

    Examples:
        >>> decoder = ResNetDecoder(32, widths=(16, 8, 8, 4))
        >>> decoder(torch.zeros(2, 5, 32)).shape
        torch.Size([2, 5, 3, 64, 64])
    """

    def __init__(
        self,
        in_features: int,
        widths: tuple[int, ...] = (192, 96, 48, 24),
        out_channels: int = 3,
        image_size: int = 64,
    ):
        super().__init__()
        side = image_size // 2 ** len(widths)
        self.initial_shape = (widths[0], side, side)
        self.projection = nn.Linear(in_features, math.prod(self.initial_shape))
        layers: list[nn.Module] = []
        for in_width, out_width in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                ResidualBlock(in_width, in_width),
                ResidualBlock(in_width, out_width),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], out_channels, 4, stride=2, padding=1))
        self.layers = nn.Sequential(*layers)

    def stem(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, in_features]`` to the first ``[N, *initial_shape]`` map ``layers`` upsample."""
        return self.projection(features).view(-1, *self.initial_shape)

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        value = features[0] if len(features) == 1 else torch.cat(features, -1)
        return _flatten_batch(lambda x: self.layers(self.stem(x)), value, 1)


class _CentredEncoder(nn.Module):
    """TorchRL's DreamerV3 encoder layers, run on centred frames.

    TorchRL's ``forward`` reads [0, 1] images and centres them; ours are centred once by
    :func:`~torchrl_prelar.modules.pixels.centred_pixels`, so the layers run on them directly
    (same computation, one conversion). ``pool="mean"`` averages the last feature map over
    space instead of flattening it, which makes the features invariant to where things are in
    the frame.
    """

    def __init__(
        self, encoder: DreamerV3ImageEncoder, in_channels: int, image_size: int, pool: str
    ):
        super().__init__()
        self.encoder = encoder
        self.pool = _check_pool(pool)
        self.output_features = (
            encoder.out_channels
            if pool == "mean"
            else encoder.output_features((in_channels, image_size, image_size))
        )

    @property
    def layers(self) -> nn.Sequential:
        """The convolution stages, on centred pixels ``[N, C, H, W]``."""
        return self.encoder.layers

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.encoder.layers(pixels)
        return features.mean((-2, -1)) if self.pool == "mean" else features.flatten(1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return _flatten_batch(self._features, centred_pixels(pixels), 3)


def _check_pool(pool: str) -> str:
    if pool not in ("flatten", "mean"):
        raise ValueError(f"pool must be 'flatten' or 'mean', got {pool!r}.")
    return pool


class _CentredDecoder(nn.Module):
    """TorchRL's DreamerV3 decoder predicting centred images.

    ``layers(stem(features))`` is the centred prediction of ``[N, in_features]`` features,
    stage by stage: what TorchRL's forward computes before its final ``+ 0.5``, which is not
    applied (and so not taken off again).
    """

    def __init__(self, decoder: DreamerV3ImageDecoder):
        super().__init__()
        self.decoder = decoder

    @property
    def layers(self) -> nn.Sequential:
        return self.decoder.layers

    def stem(self, features: torch.Tensor) -> torch.Tensor:
        """``[N, in_features]`` to the first feature map (projection, RMS norm, SiLU)."""
        decoder = self.decoder
        hidden = decoder.projection(features).reshape(-1, *decoder.initial_shape)
        return F.silu(decoder.projection_norm(hidden))

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        value = features[0] if len(features) == 1 else torch.cat(features, -1)
        return _flatten_batch(lambda x: self.layers(self.stem(x)), value, 1)


def make_conv_encoder(
    in_channels: int = 3,
    depth: int = 16,
    mults: tuple[int, ...] = (1, 2, 4, 8),
    image_size: int = 64,
    pool: str = "flatten",
) -> nn.Module:
    """TorchRL's :class:`~torchrl.modules.DreamerV3ImageEncoder` on uint8 or centred frames.

    Args:
        in_channels (int, optional): input channels. Defaults to ``3``.
        depth (int, optional): channels of the first stage. Defaults to ``16``.
        mults (tuple of int, optional): channel multiplier of each stage (each halves the
            side). Defaults to ``(1, 2, 4, 8)``.
        image_size (int, optional): input height and width. Defaults to ``64``.
        pool (str, optional): ``"flatten"`` the last feature map or average it over space
            (``"mean"``). Defaults to ``"flatten"``.

    Returns:
        the encoder, mapping ``[*batch, C, H, W]`` frames to ``[*batch, output_features]``.

    Examples:
        >>> encoder = make_conv_encoder(depth=4, mults=(1, 2))
        >>> encoder(torch.zeros(2, 3, 64, 64)).shape, encoder.output_features
        (torch.Size([2, 2048]), 2048)
    """
    encoder = DreamerV3ImageEncoder(in_channels=in_channels, depth=depth, mults=mults)
    return _CentredEncoder(encoder, in_channels, image_size, pool)


def make_conv_decoder(
    in_features: int,
    depth: int = 16,
    mults: tuple[int, ...] = (1, 2, 4, 8),
    out_channels: int = 3,
    image_size: int = 64,
) -> nn.Module:
    """TorchRL's :class:`~torchrl.modules.DreamerV3ImageDecoder` predicting centred pixels.

    Args:
        in_features (int): size of the features decoded.
        depth (int, optional): channels of the last stage. Defaults to ``16``.
        mults (tuple of int, optional): channel multiplier of each stage (each doubles the
            side). Defaults to ``(1, 2, 4, 8)``.
        out_channels (int, optional): image channels. Defaults to ``3``.
        image_size (int, optional): output height and width. Defaults to ``64``.

    Returns:
        the decoder, mapping ``[*batch, in_features]`` to ``[*batch, C, H, W]`` predictions
        in [-0.5, 0.5].

    Examples:

        >>> decoder = make_conv_decoder(8, depth=4, mults=(1, 2))
        >>> decoder(torch.zeros(2, 8)).shape
        torch.Size([2, 3, 64, 64])
    """
    decoder = DreamerV3ImageDecoder(
        in_features,
        image_shape=(out_channels, image_size, image_size),
        depth=depth,
        mults=mults,
        num_blocks=1,
    )
    return _CentredDecoder(decoder)
