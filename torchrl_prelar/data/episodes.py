"""Video episodes as sources hand them over, and the checks every writer applies.

An :class:`EpisodeSource` (see :mod:`torchrl_prelar.data.sources`) yields :class:`Episode` items,
or :class:`SkippedEpisode` for files it cannot use, so one corrupt file does not stop a long
write. Keys of the stored frames and of the transitions built from them are defined here.

Action convention: sources hand over actions in the APV/DreamerV2 convention, ``actions[t]`` =
action taken just *before* frame t (``actions[0]`` is the reset padding);
:func:`transition_actions` maps them to TorchRL's transition convention (``a[t]`` leaves o_t).

Examples:
    >>> ep = Episode(np.zeros((25, 64, 64, 3), np.uint8), name="demo-0", source="synthetic")
    >>> validate_frames(ep.frames, ep.name, (64, 64)).shape
    (25, 64, 64, 3)
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ACTION_KEY",
    "EPISODE_KEY",
    "INIT_KEY",
    "PIXELS_KEY",
    "Episode",
    "EpisodeError",
    "EpisodeSource",
    "STATE_CHANGE_KEY",
    "STATE_KEY",
    "SkippedEpisode",
    "resize_frames",
    "state_changes",
    "transition_actions",
    "validate_frames",
]

PIXELS_KEY = "pixels"
EPISODE_KEY = "episode"
ACTION_KEY = "true_action"
STATE_KEY = "true_state"
STATE_CHANGE_KEY = "true_state_change"
INIT_KEY = "is_init"


class EpisodeError(ValueError):
    """An episode that cannot be used; the message names the file and what was expected.

    Args:
        message (str): names the file and the expectation.
        kind (str, optional): category for the statistics (see :class:`SkippedEpisode`).
            Defaults to ``"corrupt"``.

    Examples:
        >>> EpisodeError("a.npz: frames are 32x32, expected 64x64", kind="wrong_size").kind
        'wrong_size'
    """

    def __init__(self, message: str, kind: str = "corrupt") -> None:
        super().__init__(message)
        self.kind = kind

    def skipped(self, name: str, source: str) -> SkippedEpisode:
        """The :class:`SkippedEpisode` reporting this error."""
        return SkippedEpisode(name, source, str(self), self.kind)


@dataclass
class Episode:
    """One video episode as handed to :class:`~torchrl_prelar.data.writer.VideoEpisodeWriter`.

    Args:
        frames (np.ndarray or torch.Tensor): uint8 ``[L + 1, H, W, 3]`` (channels last, as
            decoders return it).
        actions (np.ndarray or torch.Tensor, optional): float ``[L + 1, A]`` in the APV
            convention: ``actions[t]`` is the action taken just before frame t,
            ``actions[0]`` is padding. Defaults to ``None`` (an action-free video).
        name (str, optional): unique name within its source (file name, video id), used to
            resume writing. Defaults to ``""``.
        source (str, optional): name of the dataset the episode comes from. Defaults to
            ``"unknown"``.
        states (np.ndarray or torch.Tensor, optional): float ``[L + 1, S]``: a
            low-dimensional state at every frame (the scripted Meta-world videos keep the hand
            position and gripper opening), used only by the latent-action evaluation and the
            supervised reference
            (:class:`~torchrl_prelar.objectives.SupervisedLatentActionLoss`), never by
            pre-training. Defaults to ``None``.

    Examples:
        >>> ep = Episode(np.zeros((25, 64, 64, 3), np.uint8), name="demo-0", source="synthetic")
        >>> ep.num_frames
        25
    """

    frames: np.ndarray | torch.Tensor
    actions: np.ndarray | torch.Tensor | None = None
    name: str = ""
    source: str = "unknown"
    states: np.ndarray | torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        """The number of frames, ``L + 1``."""
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class SkippedEpisode:
    """An episode a source or the writer could not use.

    Args:
        name (str): file or video id.
        source (str): dataset name.
        reason (str): human-readable message naming the file and the expectation.
        kind (str, optional): short category used in the statistics (``"corrupt"``,
            ``"too_short"``, ``"wrong_size"``, ``"missing"``, ``"buffer_full"``...).
            Defaults to ``"corrupt"``.

    Examples:
        >>> SkippedEpisode("a.npz", "rlbench", "a.npz: truncated file", kind="corrupt").kind
        'corrupt'
    """

    name: str
    source: str
    reason: str
    kind: str = "corrupt"


class EpisodeSource(abc.ABC):
    """Base class of episode sources: an iterable of :class:`Episode` / :class:`SkippedEpisode`.

    Subclasses implement :meth:`episodes`; bad items are yielded as :class:`SkippedEpisode` (never
    raised) so one corrupt file does not stop a long write.

    Examples:
        >>> class Blank(EpisodeSource):
        ...     name = "blank"
        ...     def episodes(self, exclude=frozenset(), min_frames=0):
        ...         yield Episode(np.zeros((5, 8, 8, 3), np.uint8), name="0", source=self.name)
        >>> [ep.name for ep in Blank()]
        ['0']
    """

    name: str = "unknown"

    @abc.abstractmethod
    def episodes(
        self, exclude: Collection[str] = frozenset(), min_frames: int = 0
    ) -> Iterator[Episode | SkippedEpisode]:
        """Yields the episodes whose name is not in ``exclude``.

        Excluded items are not decoded. Sources that know an item's length without decoding
        yield it as a ``"too_short"`` :class:`SkippedEpisode` when it has fewer than
        ``min_frames`` frames.

        Args:
            exclude (collection of str, optional): names to leave out. Defaults to an empty
                set.
            min_frames (int, optional): the fewest frames a usable episode has. Defaults to
                ``0``.
        """

    def __iter__(self) -> Iterator[Episode | SkippedEpisode]:
        return self.episodes()

    def num_frames_hint(self) -> int | None:
        """Upper bound on the frames this source holds, if known without decoding."""
        return None

    def __repr__(self) -> str:
        """The class and the folder read (``root``), which error messages name.

        Examples:
            >>> class Folder(EpisodeSource):
            ...     root = "videos/"
            ...     def episodes(self, exclude=frozenset(), min_frames=0):
            ...         yield from ()
            >>> Folder()
            Folder('videos/')
        """
        root = getattr(self, "root", None)
        where = repr(str(root)) if root is not None else f"name={self.name!r}"
        return f"{type(self).__name__}({where})"


def validate_frames(
    frames: np.ndarray,
    name: str,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Checks that ``frames`` is uint8 ``[N, H, W, 3]`` (with ``(H, W) == image_size`` if given).

    Args:
        frames (np.ndarray): the frames to check.
        name (str): the episode's name, for the error message.
        image_size (tuple of int, optional): the expected ``(H, W)``. Defaults to ``None``
            (any size).

    Returns:
        ``frames``, unchanged.

    Raises:
        EpisodeError: naming ``name`` and what was expected.

    Examples:
        >>> validate_frames(np.zeros((2, 64, 64, 3), np.uint8), "a.npz", (64, 64)).shape
        (2, 64, 64, 3)
    """
    expected = (
        f"uint8 [N, {image_size[0]}, {image_size[1]}, 3]" if image_size else "uint8 [N, H, W, 3]"
    )
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise EpisodeError(
            f"{name}: frames have dtype {frames.dtype} and shape {tuple(frames.shape)}, "
            f"expected {expected}"
        )
    if image_size is not None and tuple(frames.shape[1:3]) != tuple(image_size):
        raise EpisodeError(
            f"{name}: frames are {frames.shape[1]}x{frames.shape[2]}, expected "
            f"{image_size[0]}x{image_size[1]} (ask the source to resize)",
            kind="wrong_size",
        )
    return frames


def transition_actions(actions: torch.Tensor) -> torch.Tensor:
    """Maps APV actions (``a[t]`` leads into frame t) to transitions (``a[t]`` leaves frame t).

    The result holds at row t the action taken at o_t that leads to o_{t+1}, and zeros at the
    last frame.

    Args:
        actions (torch.Tensor): ``[L + 1, A]`` in the APV convention (``actions[0]`` is the
            reset padding).

    Examples:
        >>> transition_actions(torch.tensor([[0.0], [1.0], [2.0]])).flatten().tolist()
        [1.0, 2.0, 0.0]
    """
    transition = torch.zeros_like(actions)
    transition[:-1] = actions[1:]
    return transition


def state_changes(states: torch.Tensor) -> torch.Tensor:
    """The change of a per-frame state from each frame to the next.

    Row t holds ``states[t + 1] - states[t]`` (what o_t and o_{t+1} show; the hand
    displacement in Meta-world), the last row zeros.

    Args:
        states (torch.Tensor): ``[L + 1, S]``, one state per frame.

    Examples:
        >>> state_changes(torch.tensor([[0.0], [1.0], [3.0]])).flatten().tolist()
        [1.0, 2.0, 0.0]
    """
    change = torch.zeros_like(states)
    change[:-1] = states[1:] - states[:-1]
    return change


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes uint8 frames ``[N, H, W, 3]`` to ``[N, *size, 3]`` (antialiased bilinear).

    Args:
        frames (np.ndarray): uint8 ``[N, H, W, 3]``.
        size (tuple of int): the target ``(H, W)``; frames of that size are returned as they
            are.

    Examples:
        >>> resize_frames(np.zeros((2, 128, 96, 3), np.uint8), (64, 64)).shape
        (2, 64, 64, 3)
    """
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
