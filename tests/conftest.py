import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from tensordict import TensorDict

# The pipeline (examples/dreamer_prelar.py and its builders) and the experiment drivers are
# importable by the tests as they are by the drivers: as top-level modules of their folders.
REPO = Path(__file__).resolve().parents[1]
for folder in ("examples", "experiments"):
    if str(REPO / folder) not in sys.path:
        sys.path.insert(0, str(REPO / folder))

from dreamer_prelar_utils import example_world_model  # noqa: E402

#: The example's world models (``examples/config/world_model/<name>.yaml``), each as the
#: arguments of ``make_world_model``.
WORLD_MODELS: dict[str, dict[str, Any]] = {
    name: example_world_model(name) for name in ("paper", "small", "tiny")
}
#: The size of the tests' world models.
TINY = WORLD_MODELS["tiny"]


def tiny(**changes: Any) -> dict[str, Any]:
    """The arguments of the ``tiny`` world model with ``changes`` (nested mappings merged key
    by key): ``make_world_model(**tiny(rssm={"deter": 32}))``."""
    return example_world_model("tiny", changes)


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


def pretraining_totals(world_model, updates: int = 25) -> tuple[list[float], list[float]]:
    """Total loss and action KL of ``updates`` Adam steps of ``PreLARLoss(world_model)`` on one
    fixed moving-squares batch (the action-free pre-training tests)."""
    from torchrl_prelar.data.synthetic import moving_square_batch
    from torchrl_prelar.objectives import PreLARLoss

    loss = PreLARLoss(world_model)
    optimizer = torch.optim.Adam(loss.parameters(), lr=1e-3)
    batch = moving_square_batch(4, 6, generator=torch.Generator().manual_seed(0))
    totals, action_kls = [], []
    for _ in range(updates):
        losses, _ = loss(batch.clone())
        total = sum(value for key, value in losses.items() if key.startswith("loss_"))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
        action_kls.append(float(losses["loss_action_kl"]))
    return totals, action_kls


def tiny_finetune_agent(seed: int = 0, **settings):
    """A fine-tuning agent around a fresh ``tiny`` world model (``init="dreamer"``, small
    actor and critic, no video bonus); ``settings`` go to ``make_finetune_agent``."""
    from torchrl_prelar.training.finetune_agent import (
        AUX_REWARD_KEY,
        REWARD_KEY,
        build_finetune_world_model,
        make_finetune_agent,
    )

    torch.manual_seed(seed)
    model = build_finetune_world_model(
        4, init="dreamer", pretrained=None, reward_keys=[REWARD_KEY, AUX_REWARD_KEY], **TINY
    )
    defaults = {"actor_hidden": 16, "critic_hidden": 16, "imagination_horizon": 3}
    return make_finetune_agent(model, 4, **{**defaults, "intrinsic": False, **settings})
