"""Replay buffer of action-free video episodes, built on TorchRL's replay-buffer stack.

:func:`make_video_replay_buffer` builds a :class:`~torchrl.data.ReplayBuffer` whose storage
holds uint8 frames (on disk with :class:`~torchrl.data.LazyMemmapStorage`, or in memory with
:class:`~torchrl.data.LazyTensorStorage`) and whose :class:`~torchrl.data.SliceSampler` draws
clips of ``T + 1`` consecutive frames that never cross an episode boundary. It fills the
buffer with :class:`~torchrl_prelar.data.writer.VideoEpisodeWriter` (from any iterable of
:class:`~torchrl_prelar.data.episodes.Episode`; the sources in :mod:`torchrl_prelar.data.sources`
yield them) and samples through :class:`~torchrl_prelar.data.clips.VideoClipTransform`.
Reopening an existing on-disk buffer maps the stored files back without rewriting them.

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
* ``"true_action"``: float32 ``[B, T, A]`` (only when stored), for evaluation only;
* ``"episode"``: int64 ``[B, T]``, the stored episode id.

Example:
    >>> import numpy as np
    >>> episodes = [Episode(np.zeros((30, 64, 64, 3), np.uint8), name=f"ep{i}") for i in range(3)]
    >>> rb = make_video_replay_buffer(episodes, num_transitions=24, batch_size=4)
    >>> batch = rb.sample()
    >>> batch["pixels"].shape, batch["next", "pixels"].shape, batch["is_init"].shape
    (torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 1]))
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

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

from torchrl_prelar.data.clips import VideoClipTransform
from torchrl_prelar.data.episodes import EPISODE_KEY, Episode, EpisodeSource, SkippedEpisode
from torchrl_prelar.data.writer import (
    STATS_FILE,
    STORAGE_DIR,
    WRITER_DIR,
    VideoDatasetStats,
    VideoEpisodeWriter,
)
from torchrl_prelar.training.checkpoint import check_no_pickles

__all__ = ["make_video_replay_buffer"]


def _open_existing(rb: ReplayBuffer, root: Path) -> VideoDatasetStats | None:
    stats_path = root / STATS_FILE
    storage_dir = root / STORAGE_DIR
    if not stats_path.exists():
        return None
    stats = VideoDatasetStats.from_json(stats_path)
    if (storage_dir / "storage_metadata.json").exists():
        check_no_pickles(root)
        rb.storage.loads(storage_dir)
        rb.writer.loads(root / WRITER_DIR)
    return stats


def _stored_capacity(root: Path) -> int | None:
    meta = root / STORAGE_DIR / "meta.json"
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
        storage = LazyMemmapStorage(capacity, scratch_dir=root / STORAGE_DIR, existsok=True)
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
