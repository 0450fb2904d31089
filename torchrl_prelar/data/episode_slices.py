"""DreamerV2's replay draw as a TorchRL sampler: whole slices of finished episodes, ends favoured.

TorchRL's :class:`~torchrl.data.replay_buffers.SliceSampler` draws an episode uniformly, the
one still being collected included, then a start uniformly among the slices that fit in it.
DreamerV2's replay (the agent behind the published Meta-world curves) differs in two
settings, ``ongoing: False`` and ``prioritize_ends: True``: it draws among finished episodes
only, and it draws a start uniformly from ``[0, length]`` and moves one that would run past
the episode's end back to the last slice, so an episode's last ``slice_len`` steps are drawn
``slice_len + 1`` times as often as any other slice.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict.utils import NestedKey
from torchrl.data.replay_buffers.samplers import Sampler
from torchrl.data.replay_buffers.storages import Storage

__all__ = ["EpisodeSliceSampler"]


class EpisodeSliceSampler(Sampler):
    """Slices of ``slice_len`` consecutive steps of one episode, drawn as DreamerV2 draws them.

    Episodes are the runs of equal ``traj_key`` values along a one-dimensional storage (a
    run cut by the end of a circular storage counts as two). One draw: an episode, uniformly
    among those of at least ``slice_len`` steps (with ``ongoing=False``, among those whose
    last stored step has ``end_key`` set), then a start within it. The samples are flat
    indices, ``slice_len`` per slice, slice after slice, as
    :class:`~torchrl.data.replay_buffers.SliceSampler` returns them. Draws use torch's global
    random stream, so a checkpoint that saves it resumes the same draws.

    Args:
        slice_len (int): steps per slice; ``batch_size`` must be a multiple of it.

    Keyword Args:
        traj_key (NestedKey, optional): the episode id of each step. Defaults to
            ``"traj_id"``.
        end_key (NestedKey, optional): set at an episode's last step. Defaults to
            ``("next", "done")``.
        ongoing (bool, optional): also draw from episodes not finished yet (TorchRL's
            behaviour); DreamerV2's Meta-world runs use ``False``. Defaults to ``True``.
        prioritize_ends (bool, optional): draw the start uniformly from ``[0, length]``
            and move it back to ``length - slice_len`` where it would run past the end
            (DreamerV2's ``prioritize_ends``); ``False``: uniformly from the slices that
            fit. Defaults to ``False``.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> done = torch.zeros(10, 1, dtype=torch.bool)
        >>> done[5] = True  # episode 0 finished; episode 1 still being collected
        >>> steps = TensorDict({"traj_id": torch.tensor([0] * 6 + [1] * 4),
        ...                     ("next", "done"): done}, [10])
        >>> buffer = TensorDictReplayBuffer(
        ...     storage=LazyTensorStorage(10),
        ...     sampler=EpisodeSliceSampler(3, ongoing=False, prioritize_ends=True),
        ...     batch_size=6)
        >>> _ = buffer.extend(steps)
        >>> buffer.sample()["traj_id"].unique().tolist()
        [0]
    """

    def __init__(
        self,
        slice_len: int,
        *,
        traj_key: NestedKey = "traj_id",
        end_key: NestedKey = ("next", "done"),
        ongoing: bool = True,
        prioritize_ends: bool = False,
    ):
        if isinstance(slice_len, bool) or not isinstance(slice_len, int) or slice_len < 1:
            raise ValueError(f"slice_len must be an integer >= 1, got {slice_len!r}.")
        self.slice_len = slice_len
        self.traj_key = traj_key
        self.end_key = end_key
        self.ongoing = ongoing
        self.prioritize_ends = prioritize_ends

    def episodes(self, storage: Storage) -> tuple[torch.Tensor, torch.Tensor]:
        """First storage index and length of each episode a slice may be drawn from."""
        if getattr(storage, "ndim", 1) != 1:
            raise ValueError(
                f"EpisodeSliceSampler reads a one-dimensional storage, got ndim={storage.ndim} "
                "(several env workers): use TorchRL's SliceSampler there."
            )
        stored = storage[: len(storage)]
        traj = stored.get(self.traj_key).reshape(len(storage))
        new = torch.ones_like(traj, dtype=torch.bool)
        new[1:] = traj[1:] != traj[:-1]
        starts = new.nonzero().squeeze(-1)
        lengths = torch.diff(starts, append=starts.new_tensor([len(traj)]))
        keep = lengths >= self.slice_len
        if not self.ongoing:
            ends = stored.get(self.end_key).reshape(len(storage), -1).any(-1)
            keep &= ends[starts + lengths - 1]
        return starts[keep], lengths[keep]

    def sample(self, storage: Storage, batch_size: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if batch_size % self.slice_len:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of slice_len ({self.slice_len})."
            )
        starts, lengths = self.episodes(storage)
        if not len(starts):
            finished = "" if self.ongoing else " finished"
            raise RuntimeError(
                f"No{finished} episode of at least {self.slice_len} steps in the replay buffer "
                f"yet ({len(storage)} steps stored)."
            )
        count = batch_size // self.slice_len
        device = starts.device
        chosen = torch.randint(len(starts), (count,), device=device)
        room = lengths[chosen] - self.slice_len  # the last start that fits
        if self.prioritize_ends:
            offset = torch.minimum(
                (torch.rand(count, device=device) * (lengths[chosen] + 1)).long(), room
            )
        else:
            offset = (torch.rand(count, device=device) * (room + 1)).long()
        first = starts[chosen] + offset
        index = (first[:, None] + torch.arange(self.slice_len, device=device)).reshape(-1)
        return index, {}

    def _empty(self) -> None:
        """Nothing cached: episodes are read from the storage at each draw."""

    def dumps(self, path: Any) -> None:
        """Nothing to save (draws use torch's global random stream)."""

    def loads(self, path: Any) -> None:
        """Nothing to load."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(slice_len={self.slice_len}, traj_key={self.traj_key!r}, "
            f"ongoing={self.ongoing}, prioritize_ends={self.prioritize_ends})"
        )
