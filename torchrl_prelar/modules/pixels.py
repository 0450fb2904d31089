"""The one conversion of frames, and the checks, shared by every module that reads frames.

Frames stay as the caller gives them in a TensorDict: uint8 in [0, 255] (as stored, as
environments and TorchRL's replay buffers hold them) or floats already in [-0.5, 0.5]. No
module rewrites its input entry. Each network that reads frames (the pixel encoders of
:mod:`~torchrl_prelar.modules.networks`, the latent action model, ContextWM's context
encoder) converts them with :func:`centred_pixels` on the way in, and
:class:`~torchrl_prelar.objectives.PreLARLoss` converts its reconstruction target with it,
on its own copy of the batch. Decoders predict centred floats.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

PIXEL_LOW, PIXEL_HIGH = -0.5, 0.5


def centred_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """Return frames as floats in [-0.5, 0.5]; uint8 frames are scaled, floats pass through.

    The only place where frames are normalised: ``uint8 / 255 - 0.5`` in float32, a new
    tensor (the input is never modified).

    Args:
        pixels (torch.Tensor): uint8 frames in [0, 255], or floats in [-0.5, 0.5].

    Examples:
        >>> centred_pixels(torch.tensor([0, 255], dtype=torch.uint8))
        tensor([-0.5000,  0.5000])
    """
    if pixels.dtype == torch.uint8:
        return pixels.float().div_(255.0).sub_(0.5)
    return pixels


def check_pixels(
    tensordict: TensorDictBase, key: NestedKey, image_shape: tuple[int, int, int]
) -> None:
    """Raise a ``KeyError``/``ValueError`` naming ``key`` if its frames are not usable.

    Frames must be present, end in ``image_shape`` (C, H, W), and be either uint8 or
    finite floats in [-0.5, 0.5].

    Args:
        tensordict (TensorDictBase): the batch.
        key (NestedKey): the frames' key.
        image_shape (tuple of int): ``(C, H, W)`` of a frame.

    Raises:
        KeyError: if ``key`` is missing.
        ValueError: if the shape, dtype or range is wrong, or a value is not finite.

    Examples:

        >>> from tensordict import TensorDict
        >>> td = TensorDict({"pixels": torch.zeros(2, 3, 8, 8)}, [2])
        >>> check_pixels(td, "pixels", (3, 8, 8))
    """
    pixels = tensordict.get(key, None)
    if pixels is None:
        raise KeyError(
            f"Missing key {key!r}: expected frames of shape "
            f"[*batch, {', '.join(map(str, image_shape))}]"
            f" (uint8, or float in [{PIXEL_LOW}, {PIXEL_HIGH}])."
        )
    if tuple(pixels.shape[-3:]) != tuple(image_shape):
        raise ValueError(
            f"{key!r} has shape {tuple(pixels.shape)}: expected [*batch, C, H, W] ending in "
            f"{tuple(image_shape)} (channels first)."
        )
    if pixels.dtype == torch.uint8:
        return
    if not pixels.is_floating_point():
        raise ValueError(f"{key!r} has dtype {pixels.dtype}: expected uint8 or a float dtype.")
    if not torch.isfinite(pixels).all():
        raise ValueError(f"{key!r} contains NaN or infinite values.")
    low, high = pixels.aminmax()
    if low < PIXEL_LOW or high > PIXEL_HIGH:
        raise ValueError(
            f"{key!r} has float values in [{low.item():.3f}, {high.item():.3f}]: expected "
            f"[{PIXEL_LOW}, {PIXEL_HIGH}] (uint8 / 255 - 0.5)."
        )
