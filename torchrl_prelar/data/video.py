"""Replay buffer of action-free video episodes, built on TorchRL's replay-buffer stack.

Three pieces, one job each:

* :func:`make_video_replay_buffer` builds a :class:`~torchrl.data.ReplayBuffer` whose storage
  holds uint8 frames (on disk with :class:`~torchrl.data.LazyMemmapStorage`, or in memory with
  :class:`~torchrl.data.LazyTensorStorage`) and whose :class:`~torchrl.data.SliceSampler` draws
  clips of ``T + 1`` consecutive frames that never cross an episode boundary. Reopening an
  existing on-disk buffer maps the stored files back without rewriting them.
* :class:`VideoEpisodeWriter` fills that buffer from any iterable of :class:`Episode` (the sources
  in :mod:`torchrl_prelar.data.sources` yield them), skips and reports bad or short episodes, and
  keeps :class:`VideoDatasetStats` next to the data.
* :class:`VideoClipTransform` turns a sampled flat batch of ``B * (T + 1)`` stored frames into the
  ``[B, T]`` transition TensorDict the world model trains on.

Storage layout (one row per frame, flat first dimension):

=================  ==========================  ================================================
key                dtype / shape               meaning
=================  ==========================  ================================================
``"pixels"``       uint8 ``[N, 3, H, W]``      frame o_t, channels first (converted once, at
                                               write time, so sampling never permutes)
``"episode"``      int64 ``[N]``               episode id, the sampler's ``traj_key``
``"true_action"``  float32 ``[N, A]``          only if the source has actions: the action taken
                                               between o_t and o_{t+1} (last frame: zeros;
                                               episodes without actions: NaN)
=================  ==========================  ================================================

Action convention: sources hand over actions in the APV/DreamerV2 convention, ``actions[t]`` =
action taken just *before* frame t (``actions[0]`` is the reset padding). The writer is the one
place that maps it to TorchRL's transition convention: stored ``true_action[t] = actions[t + 1]``.

Training batch (output of :class:`VideoClipTransform`, shape ``[B, T]``):

* ``"pixels"``: float32 ``[B, T, 3, H, W]`` in ``[-0.5, 0.5]``, frame o_t;
* ``("next", "pixels")``: same, frame o_{t+1}; both are views of one ``[B, T + 1]`` tensor;
* ``"is_init"``: bool ``[B, T, 1]``, True at t = 0 of every clip;
* ``"true_action"``: float32 ``[B, T, A]`` (only when stored), for evaluation only.

Example:
    >>> import numpy as np
    >>> episodes = [Episode(np.zeros((30, 64, 64, 3), np.uint8), name=f"ep{i}") for i in range(3)]
    >>> rb = make_video_replay_buffer(episodes, num_transitions=24, batch_size=4)
    >>> batch = rb.sample()
    >>> batch["pixels"].shape, batch["next", "pixels"].shape, batch["is_init"].shape
    (torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 1]))
"""

from __future__ import annotations

import abc
import json
import os
import time
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tensordict import TensorDict, TensorDictBase
from torchrl import torchrl_logger
from torchrl.data import (
    LazyMemmapStorage,
    LazyTensorStorage,
    ReplayBuffer,
    RoundRobinWriter,
    SliceSampler,
    SliceSamplerWithoutReplacement,
)
from torchrl.envs.transforms import Compose, Transform

from torchrl_prelar.training.checkpoint import check_no_pickles

__all__ = [
    "Episode",
    "EpisodeError",
    "EpisodeSource",
    "SkippedEpisode",
    "VideoClipTransform",
    "VideoDatasetStats",
    "VideoEpisodeWriter",
    "make_video_replay_buffer",
    "resize_frames",
    "transition_actions",
    "transitions_from_frames",
    "validate_frames",
]

PIXELS_KEY = "pixels"
EPISODE_KEY = "episode"
ACTION_KEY = "true_action"
INIT_KEY = "is_init"

_STATS_FILE = "video_dataset.json"
_STORAGE_DIR = "storage"
_WRITER_DIR = "writer"


class EpisodeError(ValueError):
    """An episode that cannot be used; the message names the file and what was expected.

    Args:
        message: names the file and the expectation.
        kind: category for the statistics (see :class:`SkippedEpisode`).

    Example:
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
    """One video episode as handed to :class:`VideoEpisodeWriter`.

    Args:
        frames: uint8 array or tensor ``[L + 1, H, W, 3]`` (channels last, as decoders return it).
        actions: optional float array ``[L + 1, A]`` in the APV convention: ``actions[t]`` is the
            action taken just before frame t, ``actions[0]`` is padding.
        name: unique name within its source (file name, video id), used to resume writing.
        source: name of the dataset the episode comes from.

    Example:
        >>> ep = Episode(np.zeros((25, 64, 64, 3), np.uint8), name="demo-0", source="synthetic")
        >>> ep.num_frames
        25
    """

    frames: np.ndarray | torch.Tensor
    actions: np.ndarray | torch.Tensor | None = None
    name: str = ""
    source: str = "unknown"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class SkippedEpisode:
    """An episode a source or the writer could not use.

    Args:
        name: file or video id.
        source: dataset name.
        reason: human-readable message naming the file and the expectation.
        kind: short category used in the statistics (``"corrupt"``, ``"too_short"``,
            ``"wrong_size"``, ``"missing"``, ``"buffer_full"``...).

    Example:
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

    Example:
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
        """

    def __iter__(self) -> Iterator[Episode | SkippedEpisode]:
        return self.episodes()

    def num_frames_hint(self) -> int | None:
        """Upper bound on the frames this source holds, if known without decoding."""
        return None


@dataclass
class VideoDatasetStats:
    """What a video buffer holds: episodes, frames, per-source counts and skipped items.

    Example:
        >>> stats = VideoDatasetStats()
        >>> stats.add_episode("rlbench", 25)
        >>> print(stats.summary().splitlines()[0])
        video dataset: 1 episodes, 25 frames
    """

    episodes: int = 0
    frames: int = 0
    min_frames: int = 0
    frame_shape: list[int] | None = None
    action_dim: int | None = None
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    written: dict[str, list[str]] = field(default_factory=dict)

    def add_episode(self, source: str, num_frames: int, name: str | None = None) -> None:
        self.episodes += 1
        self.frames += num_frames
        entry = self.sources.setdefault(source, {"episodes": 0, "frames": 0})
        entry["episodes"] += 1
        entry["frames"] += num_frames
        if name is not None:
            self.written.setdefault(source, []).append(name)

    def add_skip(self, skip: SkippedEpisode) -> None:
        self.skipped.append(asdict(skip))

    def known_names(self) -> dict[str, set[str]]:
        """Per source, the names already written or skipped (not decoded again on resume)."""
        known = {source: set(names) for source, names in self.written.items()}
        for skip in self.skipped:
            known.setdefault(skip["source"], set()).add(skip["name"])
        return known

    def summary(self) -> str:
        lines = [f"video dataset: {self.episodes} episodes, {self.frames} frames"]
        for source, entry in sorted(self.sources.items()):
            lines.append(
                f"  source {source}: {entry['episodes']} episodes, {entry['frames']} frames"
            )
        kinds = Counter(s["kind"] for s in self.skipped)
        if kinds:
            detail = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
            lines.append(f"  skipped {len(self.skipped)} ({detail})")
            for skip in self.skipped:
                if skip["kind"] != "too_short":
                    lines.append(f"    {skip['reason']}")
        if kinds.get("too_short"):
            lines.append(f"    too_short = fewer than {self.min_frames} frames")
        return "\n".join(lines)

    def to_json(self, path: Path) -> None:
        """Writes the stats atomically (a crash never leaves a half-written file)."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, path)

    @classmethod
    def from_json(cls, path: Path) -> VideoDatasetStats:
        return cls(**json.loads(path.read_text()))


def validate_frames(
    frames: np.ndarray,
    name: str,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Checks that ``frames`` is uint8 ``[N, H, W, 3]`` (with ``(H, W) == image_size`` if given).

    Raises:
        EpisodeError: naming ``name`` and what was expected.

    Example:
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

    ``actions`` is ``[L + 1, A]`` (``actions[0]`` is the reset padding); the result holds at
    row t the action taken at o_t that leads to o_{t+1}, and zeros at the last frame.

    Example:
        >>> transition_actions(torch.tensor([[0.0], [1.0], [2.0]])).flatten().tolist()
        [1.0, 2.0, 0.0]
    """
    transition = torch.zeros_like(actions)
    transition[:-1] = actions[1:]
    return transition


def transitions_from_frames(
    frames: torch.Tensor, *, device: torch.device | None = None, **extra: torch.Tensor
) -> TensorDict:
    """``B`` clips of ``T + 1`` frames ``[B, T + 1, C, H, W]`` as ``[B, T]`` transitions.

    ``"pixels"`` is o_t and ``("next", "pixels")`` o_{t+1} (two views of ``frames``);
    ``"is_init"`` (``[B, T, 1]``) is True at t = 0 of every clip. ``extra`` entries
    (``[B, T, ...]``) are added as they are.

    Example:
        >>> td = transitions_from_frames(torch.zeros(2, 4, 3, 8, 8), step=torch.zeros(2, 3))
        >>> td.batch_size, td["is_init"][0, :, 0].tolist()
        (torch.Size([2, 3]), [True, False, False])
    """
    batch_size, steps = frames.shape[0], frames.shape[1] - 1
    is_init = torch.zeros(batch_size, steps, 1, dtype=torch.bool)
    is_init[:, 0] = True
    return TensorDict(
        {
            PIXELS_KEY: frames[:, :-1],
            ("next", PIXELS_KEY): frames[:, 1:],
            INIT_KEY: is_init,
            **extra,
        },
        batch_size=[batch_size, steps],
        device=device,
    )


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes uint8 frames ``[N, H, W, 3]`` to ``[N, *size, 3]`` (antialiased bilinear).

    Example:
        >>> resize_frames(np.zeros((2, 128, 96, 3), np.uint8), (64, 64)).shape
        (2, 64, 64, 3)
    """
    if tuple(frames.shape[1:3]) == tuple(size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _progress(iterable: Iterable, total: int | None, desc: str) -> Iterable:
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is an optional dependency (examples extra)
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="ep")


def _source_length(source: Iterable) -> int | None:
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


class VideoEpisodeWriter:
    """Writes episodes into a video replay buffer built by :func:`make_video_replay_buffer`.

    Episodes are validated, converted to channels-first uint8 and appended once; bad or short
    episodes are skipped and reported, a full buffer is never overwritten. With an on-disk buffer
    (``root``), the storage length, writer cursor and :class:`VideoDatasetStats` are flushed
    every ``flush_interval`` seconds and when :meth:`write` returns or fails, so nothing already
    written is lost, and a later call skips (without decoding) the episodes already written.
    Each episode's id is the storage index of its first frame, so ids never repeat.

    Args:
        buffer: the replay buffer (its storage must be empty or hold data written by this class).
        root: folder of the on-disk buffer, ``None`` for an in-memory one.

    Keyword Args:
        min_frames: shortest episode kept, defaults to the sampler's ``slice_len`` (``T + 1``).
        flush_interval: seconds between two flushes of the on-disk metadata while writing.

    Example:
        >>> rb = make_video_replay_buffer(num_transitions=4, batch_size=2, capacity=100)
        >>> writer = VideoEpisodeWriter(rb)
        >>> stats = writer.write([Episode(np.zeros((10, 8, 8, 3), np.uint8), name="a")])
        >>> stats.episodes, stats.frames, len(rb)
        (1, 10, 10)
    """

    def __init__(
        self,
        buffer: ReplayBuffer,
        root: str | Path | None = None,
        *,
        min_frames: int | None = None,
        flush_interval: float = 10.0,
    ) -> None:
        self.buffer = buffer
        self.root = Path(root) if root is not None else None
        if min_frames is None:
            min_frames = getattr(buffer.sampler, "slice_len", None)
            if min_frames is None:
                raise ValueError("min_frames is required when the sampler has no slice_len")
        self.min_frames = int(min_frames)
        self.flush_interval = flush_interval
        stats_path = self._stats_path
        if stats_path is not None and stats_path.exists():
            self.stats = VideoDatasetStats.from_json(stats_path)
        else:
            self.stats = VideoDatasetStats(min_frames=self.min_frames)
        self._known = self.stats.known_names()
        self._last_flush = time.monotonic()
        self._dirty = False

    @property
    def _stats_path(self) -> Path | None:
        return self.root / _STATS_FILE if self.root is not None else None

    def write(self, episodes: Iterable[Episode | SkippedEpisode]) -> VideoDatasetStats:
        """Appends ``episodes`` (an :class:`EpisodeSource` or any iterable) and returns the stats.

        Episodes whose ``(source, name)`` was already written or skipped are left out.
        """
        if isinstance(episodes, EpisodeSource):
            known = frozenset(self._known.get(episodes.name, ()))
            items = episodes.episodes(exclude=known, min_frames=self.min_frames)
            desc = f"writing {episodes.name}"
        else:
            items = iter(episodes)
            desc = "writing episodes"
        written_before = self.stats.episodes
        try:
            for item in _progress(items, _source_length(episodes), desc):
                self._write_one(item)
                if time.monotonic() - self._last_flush > self.flush_interval:
                    self.flush()
        finally:
            self.flush()
        torchrl_logger.info(
            f"wrote {self.stats.episodes - written_before} new episodes\n{self.stats.summary()}"
        )
        return self.stats

    def _write_one(self, item: Episode | SkippedEpisode) -> None:
        if isinstance(item, SkippedEpisode):
            self._skip(item)
            return
        if item.name and item.name in self._known.get(item.source, ()):
            return
        name = item.name or "<unnamed episode>"
        if item.num_frames < self.min_frames:
            reason = f"{name}: {item.num_frames} frames, expected at least {self.min_frames}"
            self._skip(SkippedEpisode(item.name, item.source, reason, "too_short"))
            return
        try:
            data = self._to_tensordict(item, name)
        except EpisodeError as err:
            self._skip(err.skipped(item.name, item.source))
            return
        storage = self.buffer.storage
        if len(storage) + data.shape[0] > storage.max_size:
            reason = (
                f"{name}: buffer full ({len(storage)}/{storage.max_size} frames, episode has "
                f"{data.shape[0]}); raise capacity"
            )
            self._skip(SkippedEpisode(item.name, item.source, reason, "buffer_full"))
            return
        self.buffer.extend(data)
        if self.stats.frame_shape is None:
            self.stats.frame_shape = list(data[PIXELS_KEY].shape[1:])
            self.stats.action_dim = data[ACTION_KEY].shape[-1] if ACTION_KEY in data.keys() else 0
        self.stats.add_episode(item.source, data.shape[0], item.name or None)
        self._dirty = True
        if item.name:
            self._known.setdefault(item.source, set()).add(item.name)

    def _skip(self, skip: SkippedEpisode) -> None:
        self.stats.add_skip(skip)
        self._dirty = True
        self._known.setdefault(skip.source, set()).add(skip.name)
        if skip.kind == "too_short":
            torchrl_logger.debug(f"skipped {skip.reason}")
        else:
            torchrl_logger.warning(f"skipped {skip.reason}")

    def _to_tensordict(self, episode: Episode, name: str) -> TensorDictBase:
        frames = episode.frames
        if isinstance(frames, torch.Tensor):
            frames = frames.numpy()
        validate_frames(frames, name)
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        stored_shape = self.stats.frame_shape
        if stored_shape is not None and list(pixels.shape[1:]) != stored_shape:
            raise EpisodeError(
                f"{name}: frames are {frames.shape[1]}x{frames.shape[2]}, the buffer holds "
                f"{stored_shape[1]}x{stored_shape[2]} frames",
                kind="wrong_size",
            )
        num_frames = pixels.shape[0]
        data = {
            PIXELS_KEY: pixels,
            EPISODE_KEY: torch.full((num_frames,), len(self.buffer.storage), dtype=torch.int64),
        }
        actions = self._transition_actions(episode, name)
        if actions is not None:
            data[ACTION_KEY] = actions
        return TensorDict(data, batch_size=[num_frames])

    def _transition_actions(self, episode: Episode, name: str) -> torch.Tensor | None:
        """Maps APV actions (``a[t]`` leads into frame t) to transitions (``a[t]`` leaves it)."""
        num_frames = episode.num_frames
        stored_dim = self.stats.action_dim
        if episode.actions is None:
            if not stored_dim:
                return None
            return torch.full((num_frames, stored_dim), float("nan"))
        actions = torch.as_tensor(np.asarray(episode.actions), dtype=torch.float32)
        if actions.ndim != 2 or actions.shape[0] != num_frames:
            raise EpisodeError(
                f"{name}: actions have shape {tuple(actions.shape)}, expected "
                f"[{num_frames}, A] (one per frame, APV convention)"
            )
        if stored_dim == 0:
            torchrl_logger.warning(f"{name}: actions dropped, the buffer was created without them")
            return None
        if stored_dim is not None and actions.shape[-1] != stored_dim:
            raise EpisodeError(
                f"{name}: actions have {actions.shape[-1]} dims, the buffer holds {stored_dim}"
            )
        return transition_actions(actions)

    def flush(self) -> None:
        """Saves storage length, writer cursor and stats to ``root``.

        A no-op in memory or when nothing changed since the last flush, so reopening a buffer
        and writing no new episode leaves every file untouched.
        """
        self._last_flush = time.monotonic()
        if self.root is None or not self._dirty:
            return
        self._dirty = False
        self.root.mkdir(parents=True, exist_ok=True)
        if self.buffer.storage.initialized:
            self.buffer.storage.dumps(self.root / _STORAGE_DIR)
            self.buffer.writer.dumps(self.root / _WRITER_DIR)
        self.stats.to_json(self._stats_path)


class VideoClipTransform(Transform):
    """Turns a flat batch of ``B * (T + 1)`` stored frames into ``[B, T]`` transitions.

    Replay-buffer transform (pass it as ``transform=`` or inside a
    :class:`~torchrl.envs.transforms.Compose`); it is stateless, so it is safe with ``prefetch``.
    The uint8 frames are converted once to float32 in ``[-0.5, 0.5]``; ``"pixels"`` and
    ``("next", "pixels")`` are two views of that one ``[B, T + 1]`` tensor. ``"is_init"`` is True
    at t = 0 of every clip and ``"true_action"`` (when stored) is kept for transitions
    ``0 .. T - 1``. Other stored keys (episode ids, sampler metadata) are dropped.

    Args:
        num_transitions: T, the number of transitions per clip (clips hold ``T + 1`` frames).
        resize: optional ``(H, W)`` to resize frames to (antialiased bilinear).

    Example:
        >>> t = VideoClipTransform(num_transitions=2)
        >>> flat = TensorDict(
        ...     pixels=torch.zeros(6, 3, 8, 8, dtype=torch.uint8),
        ...     episode=torch.tensor([0, 0, 0, 1, 1, 1]),
        ...     batch_size=[6],
        ... )
        >>> out = t(flat)
        >>> out.batch_size, out["is_init"][:, :, 0].tolist()
        (torch.Size([2, 2]), [[True, False], [True, False]])
    """

    def __init__(self, num_transitions: int, *, resize: tuple[int, int] | None = None) -> None:
        if num_transitions < 1:
            raise ValueError(f"num_transitions must be >= 1, got {num_transitions}")
        super().__init__(in_keys=[PIXELS_KEY], out_keys=[PIXELS_KEY, ("next", PIXELS_KEY)])
        self.num_transitions = num_transitions
        self.resize = tuple(resize) if resize is not None else None

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        clip_len = self.num_transitions + 1
        if tensordict.ndim != 1 or tensordict.shape[0] % clip_len:
            raise ValueError(
                f"VideoClipTransform expects a flat batch of B * (T + 1) = B * {clip_len} frames, "
                f"got batch size {tuple(tensordict.shape)}"
            )
        clips = tensordict.reshape(-1, clip_len)
        num_clips = clips.shape[0]
        pixels = clips.get(PIXELS_KEY)
        if pixels.dtype != torch.uint8 or pixels.ndim != 5 or pixels.shape[2] != 3:
            raise ValueError(
                f"'{PIXELS_KEY}' must be uint8 [N, 3, H, W] in storage, got {pixels.dtype} "
                f"{tuple(tensordict.get(PIXELS_KEY).shape)}"
            )
        episode = clips.get(EPISODE_KEY, None)
        if episode is not None and (episode != episode[:, :1]).any():
            raise ValueError(
                f"a sampled clip crosses an episode boundary: sample with a SliceSampler using "
                f"traj_key='{EPISODE_KEY}', slice_len={clip_len}, strict_length=True"
            )
        frames = pixels.to(torch.float32).div_(255.0).sub_(0.5)
        if self.resize is not None and tuple(frames.shape[-2:]) != self.resize:
            frames = F.interpolate(
                frames.flatten(0, 1), size=self.resize, mode="bilinear", antialias=True
            ).unflatten(0, (num_clips, clip_len))
            frames.clamp_(-0.5, 0.5)  # the antialiasing filter can overshoot by rounding error
        out = transitions_from_frames(frames, device=tensordict.device)
        actions = clips.get(ACTION_KEY, None)
        if actions is not None:
            out.set(ACTION_KEY, actions[:, :-1].to(torch.float32))
        return out

    def _call(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise RuntimeError("VideoClipTransform is a replay-buffer transform, not an env transform")


def _open_existing(rb: ReplayBuffer, root: Path) -> VideoDatasetStats | None:
    stats_path = root / _STATS_FILE
    storage_dir = root / _STORAGE_DIR
    if not stats_path.exists():
        return None
    stats = VideoDatasetStats.from_json(stats_path)
    if (storage_dir / "storage_metadata.json").exists():
        check_no_pickles(root)
        rb.storage.loads(storage_dir)
        rb.writer.loads(root / _WRITER_DIR)
    return stats


def _stored_capacity(root: Path) -> int | None:
    meta = root / _STORAGE_DIR / "meta.json"
    if not meta.exists():
        return None
    return int(json.loads(meta.read_text())["shape"][0])


def make_video_replay_buffer(
    sources: Iterable[EpisodeSource | Iterable[Episode | SkippedEpisode]] | Iterable[Episode] = (),
    *,
    num_transitions: int = 24,
    batch_size: int = 16,
    root: str | Path | None = None,
    capacity: int | None = None,
    resize: tuple[int, int] | None = None,
    transform: Transform | None = None,
    replacement: bool = True,
    prefetch: int | None = None,
    flush_interval: float = 10.0,
) -> ReplayBuffer:
    """Builds (or reopens) a replay buffer of video episodes that samples ``[B, T]`` clips.

    Each sample holds ``batch_size`` clips of ``num_transitions + 1`` consecutive frames from one
    episode each (``SliceSampler(traj_key="episode", slice_len=T + 1, strict_length=True)``),
    transformed by :class:`VideoClipTransform` (composed before ``transform`` when given).

    The buffer is a plain :class:`~torchrl.data.ReplayBuffer` over a TensorDict storage:
    :class:`~torchrl.data.TensorDictReplayBuffer` writes the sampler's flat per-frame metadata
    back into the sample after the transform, which the ``[B, T]`` reshape rules out.

    Args:
        sources: episode sources (see :mod:`torchrl_prelar.data.sources`), a single iterable of
            :class:`Episode`, or several; written with :class:`VideoEpisodeWriter`. With an
            existing ``root`` only episodes not yet written are decoded and appended.

    Keyword Args:
        num_transitions: T, transitions per clip (the reference uses 24, i.e. 25 frames).
        batch_size: clips per sample (reference: 16).
        root: folder of an on-disk buffer (:class:`~torchrl.data.LazyMemmapStorage`). If it
            already holds a buffer, its files are mapped back as they are. ``None`` keeps the
            frames in memory (:class:`~torchrl.data.LazyTensorStorage`).
        capacity: maximum number of frames; defaults to the frame count the sources announce.
        resize: optional ``(H, W)`` to resize frames to at sampling time.
        transform: extra transform applied after :class:`VideoClipTransform`.
        replacement: sample clips with replacement (``SliceSampler``) or without
            (``SliceSamplerWithoutReplacement``).
        prefetch: number of batches prepared ahead by background threads.
        flush_interval: seconds between two metadata flushes while writing.

    Example:
        >>> import numpy as np, tempfile
        >>> eps = [Episode(np.zeros((26, 64, 64, 3), np.uint8), name=str(i)) for i in range(2)]
        >>> root = tempfile.mkdtemp()
        >>> rb = make_video_replay_buffer(eps, root=root, num_transitions=24, batch_size=16)
        >>> rb.sample()["pixels"].shape
        torch.Size([16, 24, 3, 64, 64])
        >>> len(make_video_replay_buffer(root=root))  # reopened, nothing rewritten
        52
    """
    sources = _as_source_list(sources)
    root = Path(root) if root is not None else None
    clip_len = num_transitions + 1
    stored_capacity = _stored_capacity(root) if root is not None else None
    if stored_capacity is not None:
        if capacity is not None and capacity != stored_capacity:
            torchrl_logger.warning(
                f"{root}: existing buffer has capacity {stored_capacity} frames, "
                f"ignoring capacity={capacity}"
            )
        capacity = stored_capacity
    if capacity is None:
        capacity = _capacity_from_hints(sources)
    if root is not None:
        storage = LazyMemmapStorage(capacity, scratch_dir=root / _STORAGE_DIR, existsok=True)
    else:
        storage = LazyTensorStorage(capacity)
    sampler_kwargs = {
        "slice_len": clip_len,
        "traj_key": EPISODE_KEY,
        "strict_length": True,
        "truncated_key": None,
        "init_key": None,
    }
    if replacement:
        sampler = SliceSampler(cache_values=True, **sampler_kwargs)
    else:
        sampler = SliceSamplerWithoutReplacement(**sampler_kwargs)
    clip_transform = VideoClipTransform(num_transitions, resize=resize)
    rb = ReplayBuffer(
        storage=storage,
        sampler=sampler,
        writer=RoundRobinWriter(),
        batch_size=batch_size * clip_len,
        transform=Compose(clip_transform, transform) if transform is not None else clip_transform,
        prefetch=prefetch,
    )
    if root is not None:
        stats = _open_existing(rb, root)
        if stats is not None:
            torchrl_logger.info(f"reopened video buffer {root}\n{stats.summary()}")
    writer = VideoEpisodeWriter(rb, root, min_frames=clip_len, flush_interval=flush_interval)
    for source in sources:
        writer.write(source)
    return rb


def _as_source_list(sources) -> list:
    sources = list(sources)
    if sources and all(isinstance(item, (Episode, SkippedEpisode)) for item in sources):
        return [sources]
    return sources


def _capacity_from_hints(sources: list) -> int:
    total = 0
    for source in sources:
        hint = source.num_frames_hint() if isinstance(source, EpisodeSource) else None
        if hint is None and isinstance(source, list):
            hint = sum(item.num_frames for item in source if isinstance(item, Episode))
        if hint is None:
            raise ValueError(
                f"capacity (in frames) is required: source {source!r} does not announce its size"
            )
        total += hint
    if total == 0:
        raise ValueError("capacity (in frames) is required when no sources are given")
    return total
