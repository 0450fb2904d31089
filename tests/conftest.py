import pytest
import torch
from tensordict import TensorDict


def make_clip_batch(batch: int = 2, steps: int = 4, size: int = 64, seed: int = 0) -> TensorDict:
    """A [batch, steps] batch of random uint8 transitions with one clip start at t = 0."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, steps + 1, 3, size, size), generator=generator)
    frames = frames.to(torch.uint8)
    is_init = torch.zeros(batch, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    return TensorDict(
        {"pixels": frames[:, :-1], ("next", "pixels"): frames[:, 1:], "is_init": is_init},
        [batch, steps],
    )


@pytest.fixture
def clip_batch() -> TensorDict:
    return make_clip_batch()
