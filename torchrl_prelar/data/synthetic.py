"""A synthetic action-free video whose motion is driven by a hidden action.

Bright squares move together on a dark 64x64 torus by an integer 2-d displacement drawn at
every step. The displacement is the hidden ("true") action: training never reads it, a linear
probe of the latent action against it measures how much of the action PreLAR recovered.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict


def moving_square_batch(
    batch_size: int,
    steps: int,
    *,
    image_size: int = 64,
    square: int = 12,
    num_squares: int = 1,
    max_shift: int = 4,
    generator: torch.Generator | None = None,
) -> TensorDict:
    """Sample ``batch_size`` clips of ``steps`` transitions as a PreLAR training batch.

    Each clip shows ``num_squares`` squares of side ``square`` at random places and colours,
    all displaced by the same random shift at every step (wrapping around the borders).

    Returns a ``[batch_size, steps]`` TensorDict with uint8 ``"pixels"`` and
    ``("next", "pixels")`` (``[3, image_size, image_size]``, channels first), ``"is_init"``
    (True at t = 0) and ``"true_action"``: the float displacement (dy, dx) from o_t to
    o_{t+1}, in pixels.

    Examples:
        >>> td = moving_square_batch(2, 5, generator=torch.Generator().manual_seed(0))
        >>> td["pixels"].shape, td["true_action"].shape
        (torch.Size([2, 5, 3, 64, 64]), torch.Size([2, 5, 2]))
        >>> bool((td["next", "pixels"][:, :-1] == td["pixels"][:, 1:]).all())
        True
    """
    shifts = torch.randint(-max_shift, max_shift + 1, (batch_size, steps, 2), generator=generator)
    start = torch.randint(0, image_size, (batch_size, num_squares, 1, 2), generator=generator)
    offsets = torch.cat([torch.zeros(batch_size, 1, 2, dtype=shifts.dtype), shifts.cumsum(1)], 1)
    positions = (start + offsets[:, None]) % image_size
    colours = torch.randint(128, 256, (batch_size, num_squares, 1, 3), generator=generator)
    grid = torch.arange(image_size)
    rows = (grid - positions[..., :1]) % image_size < square
    cols = (grid - positions[..., 1:]) % image_size < square
    masks = rows[..., :, None] & cols[..., None, :]
    layers = masks[..., None, :, :] * colours[..., None, None]
    frames = layers.amax(1).to(torch.uint8)
    is_init = torch.zeros(batch_size, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    return TensorDict(
        {
            "pixels": frames[:, :-1],
            ("next", "pixels"): frames[:, 1:],
            "is_init": is_init,
            "true_action": shifts.float(),
        },
        [batch_size, steps],
    )
