"""DreamerV2's actor head for continuous actions: a truncated normal on [-1, 1].

TorchRL's :class:`~torchrl.modules.models.model_based.DreamerActor` parameterises a
``TanhNormal`` (DreamerV1/V3 style: a large initial scale, a minimum of 1e-4). DreamerV2, the
agent behind the published Meta-world curves, samples from a normal truncated to [-1, 1]
whose mean is ``tanh(out)`` and whose scale is ``2 * sigmoid(raw / 2) + min_std`` with
``min_std = 0.1``. :class:`TruncatedNormalActor` writes those two parameters for TorchRL's
:class:`~torchrl.modules.TruncatedNormal` (``low=-1, high=1``), which draws reparameterised
samples, as dynamics back-propagation needs.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrl.modules import MLP


class TruncatedNormalActor(nn.Module):
    """MLP from ``(state, belief)`` to the ``(loc, scale)`` of DreamerV2's truncated normal.

    Args:
        action_dim (int): size of the action.
        depth (int, optional): hidden layers. Defaults to ``4``.
        hidden (int, optional): units per hidden layer. Defaults to ``400``.
        min_std (float, optional): smallest scale. Defaults to ``0.1`` (DreamerV2).
        init_std (float, optional): offset of the raw scale. Defaults to ``0.0``.

    Raises:
        ValueError: if ``min_std`` is not > 0.

    Examples:

        >>> actor = TruncatedNormalActor(4, depth=2, hidden=16)
        >>> loc, scale = actor(torch.zeros(3, 8), torch.zeros(3, 5))
        >>> loc.shape, bool((scale >= 0.1).all() and (scale <= 2.1).all())
        (torch.Size([3, 4]), True)
    """

    def __init__(
        self,
        action_dim: int,
        depth: int = 4,
        hidden: int = 400,
        min_std: float = 0.1,
        init_std: float = 0.0,
    ):
        super().__init__()
        if min_std <= 0:
            raise ValueError(f"min_std must be > 0, got {min_std}.")
        self.min_std = min_std
        self.init_std = init_std
        self.backbone = MLP(
            out_features=2 * action_dim,
            num_cells=[hidden] * depth,
            activation_class=nn.ELU,
        )

    def forward(
        self, state: torch.Tensor, belief: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(torch.cat([state, belief], -1))
        loc, raw_scale = out.chunk(2, -1)
        scale = 2 * torch.sigmoid((raw_scale + self.init_std) / 2) + self.min_std
        return torch.tanh(loc), scale
