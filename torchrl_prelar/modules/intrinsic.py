"""Video-based intrinsic bonus (APV, Seo et al. 2022), used by PreLAR at fine-tuning.

The bonus rewards states whose (smoothed, projected) encoder embedding is far from the
embeddings seen recently: a k-nearest-neighbour novelty estimate in the representation the
world model learned from video.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey


def causal_moving_average(x: torch.Tensor, window: int, dim: int = -2) -> torch.Tensor:
    """Mean of the last ``window`` entries along ``dim`` (fewer at the start of the sequence).

    Args:
        x (torch.Tensor): the sequence.
        window (int): number of entries averaged, at least 1.
        dim (int, optional): the time dimension. Defaults to ``-2``.

    Raises:
        ValueError: if ``window < 1``.

    Examples:
        >>> causal_moving_average(torch.tensor([[1.0], [3.0], [5.0]]), window=2)
        tensor([[1.],
                [2.],
                [4.]])
    """
    if window < 1:
        raise ValueError(f"window must be positive, got {window}.")
    x = x.movedim(dim, 0)
    cumsum = x.cumsum(0)
    shifted = torch.cat([torch.zeros_like(cumsum[:window]), cumsum[:-window]], 0)[: len(x)]
    counts = torch.arange(1, len(x) + 1, device=x.device).clamp_max(window)
    counts = counts.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
    return ((cumsum - shifted) / counts).movedim(0, dim)


class VideoIntrinsicBonus(TensorDictModuleBase):
    """APV's video-based intrinsic bonus on world-model embeddings.

    For a ``[*batch, T, E]`` sequence of encoder embeddings:

    1. causal moving average over ``window`` steps along time (5 in APV / PreLAR);
    2. fixed random projection ``E -> proj_dim`` (128), a Gaussian matrix drawn once from
       ``seed`` and kept in the state dict;
    3. raw bonus = mean Euclidean distance to the ``k`` (16) nearest neighbours in a FIFO
       queue of the ``queue_size`` (4096) most recent projected embeddings. Distances are
       taken to the queue *before* the batch is added (a point is never its own neighbour);
       then the batch is enqueued. With fewer than ``k`` entries, all entries are used; with
       an empty queue the bonus is 0;
    4. normalisation by a running mean of its magnitude, as DreamerV2's ``StreamNorm``:
       ``mag <- momentum * mag + (1 - momentum) * mean|raw|`` (``mag`` starts at 1), then
       ``bonus = raw / (mag + eps)``.

    Call it under ``torch.no_grad()``: the bonus is a reward target, not a loss. The queue,
    its fill level and the running magnitude are buffers, so checkpoints resume exactly.

    Args:
        embed_dim (int): size of the embeddings.
        proj_dim (int, optional): size of the random projection. Defaults to ``128``.
        window (int, optional): moving-average window, in time steps. Defaults to ``5``.
        queue_size (int, optional): FIFO capacity. Defaults to ``4096``.
        k (int, optional): nearest neighbours. Defaults to ``16``.
        momentum (float, optional): running-magnitude momentum. Defaults to ``0.99``.
        eps (float, optional): added to the magnitude before dividing. Defaults to
            ``1e-8``.
        seed (int, optional): seed of the projection matrix. Defaults to ``0``.
        in_key (NestedKey, optional): the embeddings read by :meth:`forward`. Defaults to
            ``("next", "encoded_latents")``.
        out_key (NestedKey, optional): where :meth:`forward` writes the bonus,
            ``[*batch, T, 1]``. Defaults to ``("next", "intrinsic_reward")``.

    Raises:
        ValueError: if a size, ``window`` or ``k`` is not positive.

    Examples:
        >>> bonus = VideoIntrinsicBonus(embed_dim=6, proj_dim=4, queue_size=8, k=2)
        >>> first = bonus.compute(torch.randn(2, 3, 6))
        >>> first.shape, bool((first == 0).all())
        (torch.Size([2, 3, 1]), True)
        >>> bool((bonus.compute(torch.randn(2, 3, 6)) > 0).all())
        True
    """

    def __init__(
        self,
        embed_dim: int,
        proj_dim: int = 128,
        window: int = 5,
        queue_size: int = 4096,
        k: int = 16,
        momentum: float = 0.99,
        eps: float = 1e-8,
        seed: int = 0,
        in_key: NestedKey = ("next", "encoded_latents"),
        out_key: NestedKey = ("next", "intrinsic_reward"),
    ):
        super().__init__()
        if min(embed_dim, proj_dim, window, queue_size, k) < 1:
            raise ValueError("embed_dim, proj_dim, window, queue_size and k must be positive.")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}.")
        self.window, self.k, self.momentum, self.eps = window, k, momentum, eps
        self.in_keys, self.out_keys = [in_key], [out_key]
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(embed_dim, proj_dim, generator=generator) / proj_dim**0.5
        self.register_buffer("projection", projection)
        self.register_buffer("queue", torch.zeros(queue_size, proj_dim))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_head", torch.zeros((), dtype=torch.long))
        self.register_buffer("magnitude", torch.ones(()))

    @property
    def queue_size(self) -> int:
        """Capacity of the FIFO queue."""
        return self.queue.shape[0]

    def project(self, embedding: torch.Tensor) -> torch.Tensor:
        """Steps 1-2: smoothed and projected embeddings, ``[*batch, T, proj_dim]``.

        Always in fp32, also under autocast: the queue and the nearest-neighbour distances
        are fp32.

        Args:
            embedding (torch.Tensor): embeddings, ``[*batch, T, E]``.
        """
        with torch.autocast(embedding.device.type, enabled=False):
            smoothed = causal_moving_average(embedding.float(), self.window, dim=-2)
            return smoothed @ self.projection

    def _enqueue(self, points: torch.Tensor) -> None:
        points = points[-self.queue_size :]
        index = (self.queue_head + torch.arange(len(points), device=points.device)) % len(
            self.queue
        )
        self.queue[index] = points
        self.queue_head.copy_((self.queue_head + len(points)) % self.queue_size)
        self.queue_count.copy_((self.queue_count + len(points)).clamp_max(self.queue_size))

    @torch.no_grad()
    def compute(self, embedding: torch.Tensor) -> torch.Tensor:
        """Bonus for a ``[*batch, T, E]`` embedding sequence; updates queue and magnitude.

        Args:
            embedding (torch.Tensor): embeddings, ``[*batch, T, E]``.

        Returns:
            the bonus, ``[*batch, T, 1]``.

        Raises:
            ValueError: if ``embedding`` is not ``[*batch, T, embed_dim]`` or holds a NaN or
                infinite value (it would enter the queue and every later bonus).
        """
        embed_dim = self.projection.shape[0]
        if embedding.ndim < 2 or embedding.shape[-1] != embed_dim:
            raise ValueError(
                f"{self.in_keys[0]!r} has shape {tuple(embedding.shape)}: expected "
                f"[*batch, T, {embed_dim}] (the embedding width this bonus was built for)."
            )
        if not torch.isfinite(embedding).all():
            raise ValueError(f"{self.in_keys[0]!r} holds NaN or infinite values.")
        projected = self.project(embedding)
        points = projected.reshape(-1, projected.shape[-1])
        count = int(self.queue_count)
        if count == 0:
            raw = points.new_zeros(len(points))
        else:
            distance = torch.cdist(points, self.queue[:count])
            nearest = distance.topk(min(self.k, count), dim=-1, largest=False).values
            raw = nearest.mean(-1)
        self._enqueue(points)
        self.magnitude.mul_(self.momentum).add_((1 - self.momentum) * raw.abs().mean())
        bonus = raw / (self.magnitude + self.eps)
        return bonus.reshape(*projected.shape[:-1], 1)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        tensordict.set(self.out_keys[0], self.compute(tensordict.get(self.in_keys[0])))
        return tensordict
