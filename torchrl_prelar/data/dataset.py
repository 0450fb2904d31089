"""Action-free video episodes as a TorchRL offline dataset, preprocessed once, memory-mapped.

:class:`VideoExperienceReplay` is a :class:`~torchrl.data.datasets.BaseDatasetExperienceReplay`
in the shape of TorchRL's :class:`~torchrl.data.datasets.VD4RLExperienceReplay`: the episodes of
its sources (:mod:`torchrl_prelar.data.sources`, or any iterable of
:class:`~torchrl_prelar.data.episodes.Episode`) are preprocessed once, by
:class:`~torchrl_prelar.data.writer.VideoEpisodeWriter`, into a
:class:`~torchrl.data.LazyMemmapStorage` under ``root``; opening the same ``root`` again maps the
files back as they are, after checking them, without decoding or rewriting anything. A
:class:`~torchrl.data.SliceSampler` draws clips of ``T + 1`` consecutive frames that never cross
an episode boundary, and :class:`~torchrl_prelar.data.clips.VideoClipTransform` (then the
``transform`` given) turns them into ``[B, T]`` transitions.

Folder layout (``root``), JSON and memory-mapped tensors only (nothing is unpickled):

===========================  ==========================================================
``video_dataset.json``     :class:`~torchrl_p  relar.data.writer.VideoDatasetStats`:
                             episodes and frames per source, skipped items, episode names
``storage/``               the TorchRL storag  e (``meta.json``, ``storage_metadata.json``
                             and one ``.memmap`` file per key, below)
``writer/metadata.json``   the storage writer  's cursor
===========================  ==========================================================

Stored keys (one row per frame, flat first dimension):

=======================  ======================  ===============================================
key                      dtype / shape           meaning
=======================  ======================  ===============================================
``"pixels"``             uint8 ``[N, 3, H, W]``  frame o_t, channels first (converted once,
                                                 at write time, so sampling never permutes)
``"episode"``            int64 ``[N]``           episode id, the sampler's ``traj_key``
``"true_action"``        float32 ``[N, A]``      only if a source has actions: the action taken
                                                 between o_t and o_{t+1} (last frame: zeros;
                                                 episodes without actions: NaN)
``"true_state"``         float32 ``[N, S]``      only if a source has states (the scripted
                                                 Meta-world videos: hand position and gripper
                                                 opening): the state at o_t (episodes without
                                                 states: NaN)
``"true_state_change"``  float32 ``[N, S]``      with ``"true_state"``: its change from o_t to
                                                 o_{t+1} (last frame: zeros)
=======================  ======================  ===============================================


Action convention: sources hand over actions in the APV/DreamerV2 convention, ``actions[t]`` =
action taken just *before* frame t (``actions[0]`` is the reset padding). The writer is the one
place that maps it to TorchRL's transition convention: stored ``true_action[t] = actions[t + 1]``.

Sample (output of :class:`VideoClipTransform`, shape ``[B, T]``):

* ``"pixels"``: uint8 ``[B, T, 3, H, W]``, frame o_t (the networks and the loss centre it);
* ``("next", "pixels")``: same, frame o_{t+1}; both are views of one ``[B, T + 1]`` tensor;
* ``"is_init"``: bool ``[B, T, 1]``, True at t = 0 of every clip;
* ``"true_action"``: float32 ``[B, T, A]`` (only when stored), for evaluation only;
* ``"true_state"``, ``"true_state_change"``: float32 ``[B, T, S]`` (only when stored), for
  evaluation and the supervised reference only;
* ``"episode"``: int64 ``[B, T]``, the stored episode id.

Examples:
    >>> import numpy as np
    >>> episodes = [Episode(np.zeros((30, 64, 64, 3), np.uint8), name=f"ep{i}") for i in range(3)]
    >>> data = VideoExperienceReplay(episodes, num_transitions=24, batch_size=4)
    >>> batch = data.sample()
    >>> batch["pixels"].shape, batch["next", "pixels"].shape, batch["is_init"].shape
    (torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 3, 64, 64]), torch.Size([4, 24, 1]))
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
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
from torchrl.data.datasets import BaseDatasetExperienceReplay
from torchrl.envs.transforms import Compose, Transform

from torchrl_prelar.data.clips import VideoClipTransform
from torchrl_prelar.data.episodes import (
    ACTION_KEY,
    EPISODE_KEY,
    PIXELS_KEY,
    STATE_CHANGE_KEY,
    STATE_KEY,
    Episode,
    EpisodeSource,
    SkippedEpisode,
)
from torchrl_prelar.data.writer import (
    STATS_FILE,
    STORAGE_DIR,
    WRITER_DIR,
    VideoDatasetError,
    VideoDatasetStats,
    VideoEpisodeWriter,
    read_json,
)
from torchrl_prelar.io import check_no_pickles

__all__ = ["VideoExperienceReplay"]

Sources = Iterable[EpisodeSource | Iterable[Episode | SkippedEpisode]] | Iterable[Episode]


class VideoExperienceReplay(BaseDatasetExperienceReplay):
    """Video episodes preprocessed once into a memory-mapped storage, sampled as ``[B, T]`` clips.

    Each sample holds ``batch_size`` clips of ``num_transitions + 1`` consecutive frames from one
    episode each (``SliceSampler(traj_key="episode", slice_len=T + 1, strict_length=True)``),
    transformed by :class:`~torchrl_prelar.data.clips.VideoClipTransform` and then by
    ``transform`` when given. The storage layout and the sample's keys are described in
    :mod:`torchrl_prelar.data.dataset`.

    As TorchRL's :class:`~torchrl.data.datasets.VD4RLExperienceReplay`, the data are
    preprocessed once into ``root`` and a dataset opened again on the same ``root`` maps the
    files back as they are (checked first: JSON and ``.memmap`` files only, every file of the
    size and every key of the dtype and shape the statistics call for). Unlike a downloaded
    dataset, a root can grow: episodes of ``sources`` not yet written (by ``(source, name)``)
    are decoded and appended, which is also how an interrupted preprocessing resumes; episodes
    already written or skipped are not decoded again.

    Args:
        sources (iterable, optional): episode sources (see :mod:`torchrl_prelar.data.sources`),
            a single iterable of :class:`~torchrl_prelar.data.episodes.Episode`, or several;
            written with :class:`~torchrl_prelar.data.writer.VideoEpisodeWriter` (frames are
            checked, episodes shorter than ``T + 1`` frames are skipped and counted).
            Defaults to ``()`` (reopen ``root``, or fill the buffer later with
            :meth:`write_episodes`).

    Keyword Args:
        num_transitions (int, optional): T, transitions per clip (the reference uses 24,
            i.e. 25 frames). Defaults to ``24``.
        batch_size (int, optional): clips per sample (the reference uses 16). Defaults to
            ``16``.
        root (str or Path, optional): folder of the dataset
            (:class:`~torchrl.data.LazyMemmapStorage`). ``None`` keeps the frames in memory
            (:class:`~torchrl.data.LazyTensorStorage`; nothing to reopen). Defaults to
            ``None``.
        capacity (int, optional): maximum number of frames. ``None`` takes the frame count
            the sources announce, or the stored capacity when ``root`` holds a dataset.
            Defaults to ``None``.
        resize (tuple of int, optional): ``(H, W)`` to resize frames to at sampling time.
            Defaults to ``None`` (frames as stored).
        transform (Transform, optional): transform applied after
            :class:`~torchrl_prelar.data.clips.VideoClipTransform`, to ``[B, T]`` samples.
            Defaults to ``None``.
        replacement (bool, optional): sample clips with replacement
            (:class:`~torchrl.data.SliceSampler`) or without
            (:class:`~torchrl.data.SliceSamplerWithoutReplacement`). Defaults to ``True``.
        prefetch (int, optional): number of batches prepared ahead by background threads.
            Defaults to ``None`` (no prefetching).
        flush_interval (float, optional): seconds between two flushes of the on-disk metadata
            while writing. Defaults to ``10.0``.

    Raises:
        VideoDatasetError: if ``root`` holds a dataset whose files are corrupt, truncated or of
            another shape than its statistics say (naming the file, the key and what was
            expected), or if ``sources`` (or the reopened ``root``) hold no usable episode:
            all skipped (naming the sources, and the files skipped with why). Nothing is
            written to ``root`` before the first episode.
        ValueError: if ``batch_size`` is below 1, or ``capacity`` is not given and cannot be
            known: no sources, or a source that does not announce its size.
        UnsafeCheckpointError: if ``root`` holds files other than JSON and ``.memmap`` ones.

    Examples:
        >>> import numpy as np, tempfile
        >>> eps = [Episode(np.zeros((26, 64, 64, 3), np.uint8), name=str(i)) for i in range(2)]
        >>> root = tempfile.mkdtemp()
        >>> data = VideoExperienceReplay(eps, root=root, num_transitions=24, batch_size=16)
        >>> data.sample()["pixels"].shape
        torch.Size([16, 24, 3, 64, 64])
        >>> len(VideoExperienceReplay(root=root, num_transitions=24))  # reopened, not rewritten
        52
    """

    def __init__(
        self,
        sources: Sources = (),
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 (clips per sample), got {batch_size}")
        self.root = root
        self.num_transitions = num_transitions
        sources = _as_source_list(sources)
        clip_len = num_transitions + 1
        reopened = self._is_downloaded()
        stored_capacity = self._check_stored_files() if reopened else None
        if stored_capacity is not None:
            if capacity is not None and capacity != stored_capacity:
                torchrl_logger.warning(
                    f"{self.root}: existing dataset has capacity {stored_capacity} frames, "
                    f"ignoring capacity={capacity}"
                )
            capacity = stored_capacity
        if capacity is None and reopened and not sources:
            capacity = 1  # a reopened root without a storage holds no episode: refused below
        if capacity is None:
            capacity = _capacity_from_hints(sources)
        if self.root is not None:
            storage = LazyMemmapStorage(
                capacity, scratch_dir=self.root / STORAGE_DIR, existsok=True
            )
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
        if transform is not None:
            clip_transform = Compose(clip_transform, transform)
        super().__init__(
            storage=storage,
            sampler=sampler,
            writer=RoundRobinWriter(),
            batch_size=batch_size * clip_len,
            transform=clip_transform,
            prefetch=prefetch,
        )
        if stored_capacity is not None:
            self.storage.loads(self.root / STORAGE_DIR)
            self.writer.loads(self.root / WRITER_DIR)
        self._episode_writer = VideoEpisodeWriter(
            self, self.root, min_frames=clip_len, flush_interval=flush_interval
        )
        if self._is_downloaded():
            torchrl_logger.info(f"reopened video dataset {self.root}\n{self.stats.summary()}")
        for source in sources:
            self._episode_writer.write(source)
        if not self.stats.episodes and (sources or reopened):
            raise VideoDatasetError(
                _no_usable_episode(sources, self.root, self.stats, clip_len, reopened)
            )

    @property
    def data_path_root(self) -> Path:
        """The dataset's folder, ``root``.

        Raises:
            ValueError: for an in-memory dataset (``root=None``).
        """
        if self.root is None:
            raise ValueError("an in-memory VideoExperienceReplay (root=None) has no folder")
        return self.root

    @property
    def data_path(self) -> Path:
        """The dataset's folder, ``root`` (one folder per dataset: there are no splits)."""
        return self.data_path_root

    @staticmethod
    def is_preprocessed(root: str | Path) -> bool:
        """Whether ``root`` holds a video dataset (written at least in part).

        A caller whose sources are expensive to build (rendered videos) can skip them when it
        does.

        Args:
            root (str or Path): the folder to look into.

        Examples:
            >>> import tempfile
            >>> VideoExperienceReplay.is_preprocessed(tempfile.mkdtemp())
            False
        """
        return (Path(root) / STATS_FILE).is_file()

    def _is_downloaded(self) -> bool:
        """Whether ``root`` holds a dataset (nothing is downloaded; the name is TorchRL's)."""
        return self.root is not None and self.is_preprocessed(self.root)

    @property
    def stats(self) -> VideoDatasetStats:
        """Episodes, frames, per-source counts and skipped items written so far."""
        return self._episode_writer.stats

    def write_episodes(
        self, episodes: EpisodeSource | Iterable[Episode | SkippedEpisode]
    ) -> VideoDatasetStats:
        """Appends the episodes not written yet (saved to ``root``) and returns :attr:`stats`.

        Episodes whose ``(source, name)`` is already written or skipped are left out.

        Args:
            episodes (EpisodeSource or iterable of Episode): the episodes to write.

        Returns:
            the dataset's :class:`~torchrl_prelar.data.writer.VideoDatasetStats`.

        Examples:
            >>> import numpy as np
            >>> data = VideoExperienceReplay(num_transitions=4, batch_size=2, capacity=20)
            >>> data.write_episodes([Episode(np.zeros((10, 8, 8, 3), np.uint8), name="a")]).frames
            10
        """
        return self._episode_writer.write(episodes)

    def sample(
        self, batch_size: int | None = None, return_info: bool = False
    ) -> TensorDictBase | tuple[TensorDictBase, dict[str, Any]]:
        """Samples ``batch_size`` clips as ``[B, T]`` transitions.

        The sampler's information (``"index"``: the storage indices of the sampled frames, flat,
        ``B * (T + 1)`` of them) is returned with ``return_info=True``. Unlike
        :class:`~torchrl.data.TensorDictReplayBuffer`, it is not written into the sample,
        which has one row per transition (``[B, T]``), not per frame.

        Args:
            batch_size (int, optional): clips to sample. Defaults to ``None`` (the
                constructor's ``batch_size``).
            return_info (bool, optional): also return the sampler's information. Defaults to
                ``False``.

        Returns:
            the ``[B, T]`` sample, and the information dictionary with ``return_info=True``.

        Examples:
            >>> import numpy as np
            >>> eps = [Episode(np.zeros((10, 8, 8, 3), np.uint8), name="a")]
            >>> batch, info = VideoExperienceReplay(eps, num_transitions=4).sample(
            ...     batch_size=2, return_info=True
            ... )
            >>> batch.batch_size, info["index"][0].shape
            (torch.Size([2, 4]), torch.Size([10]))
        """
        num_frames = None if batch_size is None else batch_size * (self.num_transitions + 1)
        return ReplayBuffer.sample(self, num_frames, return_info=return_info)

    def _check_stored_files(self) -> int | None:
        """Checks the folder before anything maps it; returns the stored capacity, if any."""
        root = self.root
        check_no_pickles(root)
        stats = VideoDatasetStats.from_json(root / STATS_FILE)
        storage_dir = root / STORAGE_DIR
        if not (storage_dir / "meta.json").is_file():
            if stats.frames:
                raise VideoDatasetError(
                    f"{root / STATS_FILE} counts {stats.frames} frames but {storage_dir} holds "
                    "no storage (meta.json); delete the folder to write the dataset again"
                )
            return None
        capacity = _check_storage_meta(storage_dir, stats)
        _check_count(storage_dir / "storage_metadata.json", "len", stats.frames)
        # the writer's cursor wraps to 0 when the episodes fill the storage exactly
        _check_count(root / WRITER_DIR / "metadata.json", "cursor", stats.frames % capacity)
        return capacity


def _check_storage_meta(storage_dir: Path, stats: VideoDatasetStats) -> int:
    """Checks every stored key's dtype, shape and file size; returns the capacity."""
    meta_path = storage_dir / "meta.json"
    meta = read_json(meta_path, "TensorDict's memmap metadata")
    hint = f"; delete {storage_dir.parent} to write the dataset again"
    if not isinstance(meta, dict) or meta.get("_type") != str(TensorDict):
        raise VideoDatasetError(f"{meta_path}: expected the metadata of a TensorDict{hint}")
    shape = meta.get("shape")
    if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int)):
        raise VideoDatasetError(f"{meta_path}: shape {shape!r}, expected [capacity]{hint}")
    capacity = shape[0]
    if stats.frame_shape is None:
        raise VideoDatasetError(
            f"{storage_dir.parent / STATS_FILE} records no frame shape but {storage_dir} holds "
            f"a storage{hint}"
        )
    expected = {
        PIXELS_KEY: (torch.uint8, [capacity, *stats.frame_shape]),
        EPISODE_KEY: (torch.int64, [capacity]),
    }
    if stats.action_dim:
        expected[ACTION_KEY] = (torch.float32, [capacity, stats.action_dim])
    if stats.state_dim:
        for key in (STATE_KEY, STATE_CHANGE_KEY):
            expected[key] = (torch.float32, [capacity, stats.state_dim])
    entries = {key: value for key, value in meta.items() if key not in ("shape", "device", "_type")}
    if set(entries) != set(expected):
        raise VideoDatasetError(
            f"{meta_path}: keys {sorted(entries)}, expected {sorted(expected)}{hint}"
        )
    for key, (dtype, key_shape) in expected.items():
        entry = entries[key]
        found = entry
        if isinstance(entry, dict) and not entry.get("is_nested"):
            found = (entry.get("dtype"), entry.get("shape"))
        if found != (str(dtype), key_shape):
            raise VideoDatasetError(
                f"{meta_path}: {key!r} is {found}, expected {dtype} {key_shape} "
                f"(from {STATS_FILE}){hint}"
            )
        file = storage_dir / f"{key}.memmap"
        size = file.stat().st_size if file.is_file() else 0
        need = math.prod(key_shape) * dtype.itemsize
        if size != need:
            raise VideoDatasetError(
                f"{file}: {size} bytes, expected {need} ({key!r}: {dtype} {key_shape}); the file "
                f"is truncated or corrupt{hint}"
            )
    return capacity


def _check_count(path: Path, field: str, expected: int) -> None:
    """Checks that the JSON file ``path`` records ``expected`` under ``field``."""
    data = read_json(path, f"an object with {field!r}")
    value = data.get(field) if isinstance(data, dict) else None
    if value != expected:
        raise VideoDatasetError(
            f"{path}: {field} is {value!r}, expected {expected} (from the frames counted in "
            f"{STATS_FILE}); delete {path.parents[1]} to write the dataset again"
        )


def _as_source_list(sources: Sources) -> list:
    sources = list(sources)
    if sources and all(isinstance(item, (Episode, SkippedEpisode)) for item in sources):
        return [sources]
    return sources


def _capacity_from_hints(sources: list) -> int:
    if not sources:
        raise ValueError("capacity (in frames) is required when no sources are given")
    total = 0
    for source in sources:
        hint = source.num_frames_hint() if isinstance(source, EpisodeSource) else None
        if hint is None and isinstance(source, list):
            hint = sum(item.num_frames for item in source if isinstance(item, Episode))
        if hint is None:
            raise ValueError(
                f"capacity (in frames) is required: source {_describe(source)} does not "
                "announce its size; pass capacity=<frames of all its episodes>"
            )
        total += hint
    # at least one frame: sources of unreadable files only still go through the writer,
    # which reports each file
    return max(total, 1)


def _describe(source: Any) -> str:
    """How error messages name a source: its repr (class and folder), or what it is."""
    if isinstance(source, EpisodeSource):
        return repr(source)
    return f"the {type(source).__name__} of episodes given"


def _no_usable_episode(
    sources: list, root: Path | None, stats: VideoDatasetStats, clip_len: int, reopened: bool
) -> str:
    """The message of a dataset left without an episode: where, what was skipped, why."""
    where = ", ".join(map(_describe, sources)) or str(root)
    kinds = Counter(skip["kind"] for skip in stats.skipped)
    if kinds:
        counts = ", ".join(f"{n} skipped as {kind}" for kind, n in sorted(kinds.items()))
        first = {}
        for skip in stats.skipped:
            first.setdefault(skip["kind"], skip["reason"])
        detail = f"{counts} ({'; '.join(first[kind] for kind in sorted(first))})"
    else:
        detail = "no episode found"
    fix = f"delete {root} and " if reopened else ""
    return (
        f"no usable episode in {where}: {detail}. Each episode needs at least "
        f"{clip_len} frames (num_transitions + 1) of uint8 [N, H, W, 3], one size for "
        f"all: {fix}fix or replace those files, or read another folder."
    )
