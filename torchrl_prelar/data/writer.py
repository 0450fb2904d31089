"""Writes video episodes into a replay buffer once, resumably, with statistics.

The on-disk layout it writes (``root``: :data:`STATS_FILE`, :data:`STORAGE_DIR`,
:data:`WRITER_DIR`) is described in :mod:`torchrl_prelar.data.dataset`, which reads it back.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl import torchrl_logger
from torchrl.data import ReplayBuffer

from torchrl_prelar.data.episodes import (
    ACTION_KEY,
    EPISODE_KEY,
    PIXELS_KEY,
    STATE_CHANGE_KEY,
    STATE_KEY,
    Episode,
    EpisodeError,
    EpisodeSource,
    SkippedEpisode,
    state_changes,
    transition_actions,
    validate_frames,
)
from torchrl_prelar.io import atomic_write_text

__all__ = ["VideoDatasetError", "VideoDatasetStats", "VideoEpisodeWriter"]

STATS_FILE = "video_dataset.json"
STORAGE_DIR = "storage"
WRITER_DIR = "writer"


class VideoDatasetError(ValueError):
    """A video dataset folder that cannot be opened; the message names the file and the expectation.

    Examples:
        >>> issubclass(VideoDatasetError, ValueError)
        True
    """


def read_json(path: Path, expected: str) -> Any:
    """Reads the JSON value in ``path``.

    Args:
        path (Path): the JSON file.
        expected (str): what the file should hold, named in the error message.

    Raises:
        VideoDatasetError: if the file cannot be read or parsed, naming ``path`` and
            ``expected``.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = path.write_text("{")
        >>> read_json(path, "the statistics")
        Traceback (most recent call last):
        ...
        torchrl_prelar.data.writer.VideoDatasetError: ...
    """
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise VideoDatasetError(
            f"{path}: cannot be read as JSON ({type(err).__name__}: {err}); expected {expected}. "
            f"Delete {path.parent} to write the dataset again."
        ) from err


@dataclass
class VideoDatasetStats:
    """What a video buffer holds: episodes, frames, per-source counts and skipped items.

    Stored as ``video_dataset.json`` in a dataset folder (:meth:`to_json`,
    :meth:`from_json`).

    Args:
        episodes (int, optional): episodes written. Defaults to ``0``.
        frames (int, optional): frames written. Defaults to ``0``.
        min_frames (int, optional): the shortest episode kept. Defaults to ``0``.
        frame_shape (list of int, optional): the stored ``[3, H, W]``. Defaults to ``None``
            (nothing written yet).
        action_dim (int, optional): the width of ``"true_action"``; ``0`` when no action is
            stored. Defaults to ``None`` (nothing written yet).
        state_dim (int, optional): the width of ``"true_state"``; ``0`` when no state is
            stored. Defaults to ``None`` (nothing written yet).
        sources (dict, optional): per source, ``{"episodes": n, "frames": n}``. Defaults to
            ``{}``.
        skipped (list of dict, optional): the skipped items, as :class:`SkippedEpisode`
            fields. Defaults to ``[]``.
        written (dict, optional): per source, the names of the episodes written. Defaults to
            ``{}``.

    Examples:
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
    state_dim: int | None = None
    sources: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    written: dict[str, list[str]] = field(default_factory=dict)

    def add_episode(self, source: str, num_frames: int, name: str | None = None) -> None:
        """Counts one written episode of ``num_frames`` frames from ``source``, named ``name``."""
        self.episodes += 1
        self.frames += num_frames
        entry = self.sources.setdefault(source, {"episodes": 0, "frames": 0})
        entry["episodes"] += 1
        entry["frames"] += num_frames
        if name is not None:
            self.written.setdefault(source, []).append(name)

    def add_skip(self, skip: SkippedEpisode) -> None:
        """Records a skipped item."""
        self.skipped.append(asdict(skip))

    def known_names(self) -> dict[str, set[str]]:
        """Per source, the names already written or skipped (not decoded again on resume)."""
        known = {source: set(names) for source, names in self.written.items()}
        for skip in self.skipped:
            known.setdefault(skip["source"], set()).add(skip["name"])
        return known

    def summary(self) -> str:
        """A human-readable summary: totals, per-source counts, skipped items and why."""
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
        atomic_write_text(path, json.dumps(asdict(self)))

    @classmethod
    def from_json(cls, path: Path) -> VideoDatasetStats:
        """Reads the stats written by :meth:`to_json`, checked field by field.

        Args:
            path (Path): the JSON file.

        Raises:
            VideoDatasetError: if the file is not JSON or a field is missing, unknown or of the
                wrong type; the message names the file and the field.
        """
        path = Path(path)
        data = read_json(path, "the statistics VideoEpisodeWriter writes")
        if not isinstance(data, dict):
            raise VideoDatasetError(
                f"{path}: holds a {type(data).__name__}, expected an object with the fields "
                f"{sorted(_STATS_FIELDS)}"
            )
        unknown = sorted(set(data) - set(_STATS_FIELDS))
        if unknown:
            raise VideoDatasetError(
                f"{path}: unknown fields {unknown}, expected only {sorted(_STATS_FIELDS)}"
            )
        for name, (check, expected) in _STATS_FIELDS.items():
            if name in data and not check(data[name]):
                raise VideoDatasetError(
                    f"{path}: field {name!r} is {data[name]!r}, expected {expected}"
                )
        return cls(**data)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_record(value: Any, keys: set[str], check: Callable[[Any], bool]) -> bool:
    return isinstance(value, dict) and set(value) == keys and all(map(check, value.values()))


_STATS_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "episodes": (_is_count, "a count"),
    "frames": (_is_count, "a count"),
    "min_frames": (_is_count, "a count"),
    "frame_shape": (
        lambda v: v is None or (isinstance(v, list) and len(v) == 3 and all(map(_is_count, v))),
        "null or [3, H, W]",
    ),
    "action_dim": (lambda v: v is None or _is_count(v), "null or a count"),
    "state_dim": (lambda v: v is None or _is_count(v), "null or a count"),
    "sources": (
        lambda v: (
            isinstance(v, dict)
            and all(_is_record(e, {"episodes", "frames"}, _is_count) for e in v.values())
        ),
        "{source: {'episodes': count, 'frames': count}}",
    ),
    "skipped": (
        lambda v: (
            isinstance(v, list)
            and all(_is_record(e, {"name", "source", "reason", "kind"}, _is_str) for e in v)
        ),
        "a list of {'name', 'source', 'reason', 'kind'} strings",
    ),
    "written": (
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(e, list) and all(map(_is_str, e)) for e in v.values())
        ),
        "{source: [episode names]}",
    ),
}


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
    """Writes episodes into a replay buffer over a TensorDict storage, once each.

    :class:`~torchrl_prelar.data.dataset.VideoExperienceReplay` preprocesses its sources with
    one (:meth:`~torchrl_prelar.data.dataset.VideoExperienceReplay.write_episodes` appends
    more); any :class:`~torchrl.data.ReplayBuffer` can be filled with one too. Episodes are
    validated, converted to channels-first uint8 and appended once; bad or short
    episodes are skipped and reported, a full buffer is never overwritten. With an on-disk buffer
    (``root``), the storage length, writer cursor and :class:`VideoDatasetStats` are flushed
    every ``flush_interval`` seconds and when :meth:`write` returns or fails, so nothing already
    written is lost, and a later call skips (without decoding) the episodes already written.
    Each episode's id is the storage index of its first frame, so ids never repeat.

    Args:
        buffer (ReplayBuffer): the replay buffer (its storage must be empty or hold data
            written by this class).
        root (str or Path, optional): folder of the on-disk buffer. Defaults to ``None`` (an
            in-memory buffer).

    Keyword Args:
        min_frames (int, optional): shortest episode kept. Defaults to ``None`` (the
            sampler's ``slice_len``, ``T + 1``).
        flush_interval (float, optional): seconds between two flushes of the on-disk metadata
            while writing. Defaults to ``10.0``.

    Raises:
        ValueError: if ``min_frames`` is not given and the buffer's sampler has no
            ``slice_len``.

    Examples:
        >>> from torchrl.data import LazyTensorStorage, ReplayBuffer
        >>> rb = ReplayBuffer(storage=LazyTensorStorage(100))
        >>> writer = VideoEpisodeWriter(rb, min_frames=5)
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
            if self.stats.frame_shape is not None and self.stats.state_dim is None:
                self.stats.state_dim = 0  # statistics without the field: no states stored
        else:
            self.stats = VideoDatasetStats(min_frames=self.min_frames)
        self._known = self.stats.known_names()
        self._last_flush = time.monotonic()
        self._dirty = False

    @property
    def _stats_path(self) -> Path | None:
        return self.root / STATS_FILE if self.root is not None else None

    def write(self, episodes: Iterable[Episode | SkippedEpisode]) -> VideoDatasetStats:
        """Appends ``episodes`` (an :class:`EpisodeSource` or any iterable) and returns the stats.

        Episodes whose ``(source, name)`` is already written or skipped are left out.

        Args:
            episodes (EpisodeSource or iterable of Episode): the episodes to write; items
                that are :class:`SkippedEpisode` are counted as skipped.

        Returns:
            the writer's :class:`VideoDatasetStats`.
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
            self.stats.state_dim = data[STATE_KEY].shape[-1] if STATE_KEY in data.keys() else 0
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
        states = self._states(episode, name)
        if states is not None:
            data[STATE_KEY] = states
            data[STATE_CHANGE_KEY] = state_changes(states)
        return TensorDict(data, batch_size=[num_frames])

    def _states(self, episode: Episode, name: str) -> torch.Tensor | None:
        """The episode's per-frame states as float32 ``[L + 1, S]`` (NaN when the buffer holds
        states and the episode has none)."""
        return self._per_frame(
            episode.states,
            episode.num_frames,
            self.stats.state_dim,
            name=name,
            what="states",
            shape="S] (one per frame)",
        )

    def _transition_actions(self, episode: Episode, name: str) -> torch.Tensor | None:
        """Maps APV actions (``a[t]`` leads into frame t) to transitions (``a[t]`` leaves it)."""
        actions = self._per_frame(
            episode.actions,
            episode.num_frames,
            self.stats.action_dim,
            name=name,
            what="actions",
            shape="A] (one per frame, APV convention)",
        )
        if episode.actions is None or actions is None:
            return actions
        return transition_actions(actions)

    @staticmethod
    def _per_frame(
        values: Any,
        num_frames: int,
        stored_dim: int | None,
        *,
        name: str,
        what: str,
        shape: str,
    ) -> torch.Tensor | None:
        """``values`` (one row per frame) as float32 ``[num_frames, D]``, checked against the
        buffer's width ``stored_dim`` (``None``: not fixed yet; 0: the buffer holds none, so
        they are dropped); NaN rows when the buffer holds ``what`` and the episode has none."""
        if values is None:
            if not stored_dim:
                return None
            return torch.full((num_frames, stored_dim), float("nan"))
        values = torch.as_tensor(np.asarray(values), dtype=torch.float32)
        if values.ndim != 2 or values.shape[0] != num_frames:
            raise EpisodeError(
                f"{name}: {what} have shape {tuple(values.shape)}, expected [{num_frames}, {shape}"
            )
        if stored_dim == 0:
            torchrl_logger.warning(f"{name}: {what} dropped, the buffer was created without them")
            return None
        if stored_dim is not None and values.shape[-1] != stored_dim:
            raise EpisodeError(
                f"{name}: {what} have {values.shape[-1]} dims, the buffer holds {stored_dim}"
            )
        return values

    def flush(self) -> None:
        """Saves storage length, writer cursor and stats to ``root``.

        A no-op in memory or when nothing changed since the last flush, so reopening a buffer
        and writing no new episode leaves every file untouched, and before the first episode is
        written: a folder of skipped items only is never written, so a later call with the
        files fixed decodes them again.
        """
        self._last_flush = time.monotonic()
        if self.root is None or not self._dirty or not self.stats.episodes:
            return
        self._dirty = False
        self.root.mkdir(parents=True, exist_ok=True)
        if self.buffer.storage.initialized:
            self.buffer.storage.dumps(self.root / STORAGE_DIR)
            self.buffer.writer.dumps(self.root / WRITER_DIR)
        self.stats.to_json(self._stats_path)
