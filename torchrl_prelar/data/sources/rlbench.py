"""RLBench videos in the APV / DreamerV2 episode format (also Meta-world scripted videos).

A folder of compressed ``.npz`` episodes named ``<time>-<id>-<length>.npz``, each with key
``"image"``: uint8 ``(length + 1, 64, 64, 3)``. ``"action"`` (``(length + 1, A)``, APV convention:
``action[t]`` leads into frame t, ``action[0] = 0``) is kept as the evaluation-only true action
when present, and ``"state"`` (``(length + 1, S)``, a low-dimensional state per frame) as the
evaluation-only true state; every other key is ignored.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Collection, Iterator
from pathlib import Path

import numpy as np

from torchrl_prelar.data.episodes import (
    Episode,
    EpisodeError,
    EpisodeSource,
    SkippedEpisode,
    resize_frames,
    validate_frames,
)

__all__ = ["RLBenchSource"]

_NAME_PATTERN = re.compile(r"^.+-.+-(\d+)\.npz$")
_NPZ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile)


class RLBenchSource(EpisodeSource):
    """Episodes from a folder of APV-format ``.npz`` files (sorted by file name).

    A corrupt or truncated file, a missing ``"image"`` key or frames of the wrong size are
    yielded as :class:`~torchrl_prelar.data.episodes.SkippedEpisode` naming the file.

    Args:
        root (str or Path): folder holding the ``.npz`` files (not searched recursively).

    Keyword Args:
        image_size (tuple of int, optional): expected ``(H, W)`` of the frames. Defaults to
            ``(64, 64)``.
        resize (bool, optional): resize frames of another size to ``image_size`` instead of
            skipping them. Defaults to ``False``.
        name (str, optional): source name in the statistics (e.g. ``"metaworld"`` for
            generated videos). Defaults to ``"rlbench"``.

    Raises:
        FileNotFoundError: if ``root`` does not exist or holds no ``.npz`` file.

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> np.savez_compressed(root / "20240101T000000-abc-24.npz",
        ...                     image=np.zeros((25, 64, 64, 3), np.uint8))
        >>> source = RLBenchSource(root)
        >>> len(source), source.num_frames_hint(), next(iter(source)).frames.shape
        (1, 25, (25, 64, 64, 3))
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: tuple[int, int] = (64, 64),
        resize: bool = False,
        name: str = "rlbench",
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder (expected a folder of .npz files)")
        self.files = sorted(self.root.glob("*.npz"))
        if not self.files:
            raise FileNotFoundError(
                f"{self.root}: no .npz episode found (expected <time>-<id>-<length>.npz files "
                f"with key 'image' of shape (L+1, {image_size[0]}, {image_size[1]}, 3))"
            )
        self.image_size = tuple(image_size)
        self.resize = resize
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def num_frames_hint(self) -> int:
        """Frames of all files, counted without decoding them.

        A file's count comes from its name, or from the ``"image"`` array's header in files
        named otherwise (0 for a file whose header cannot be read: it is corrupt).
        """
        total = 0
        for path in self.files:
            length = _length_from_name(path)
            total += length + 1 if length is not None else _frames_in_header(path)
        return total

    def episodes(
        self, exclude: Collection[str] = frozenset(), min_frames: int = 0
    ) -> Iterator[Episode | SkippedEpisode]:
        for path in self.files:
            if path.name in exclude:
                continue
            length = _length_from_name(path)
            if length is not None and length + 1 < min_frames:
                reason = f"{path}: {length + 1} frames (from its name), expected >= {min_frames}"
                yield SkippedEpisode(path.name, self.name, reason, "too_short")
                continue
            try:
                yield self._load(path)
            except EpisodeError as err:
                yield err.skipped(path.name, self.name)

    def _load(self, path: Path) -> Episode:
        try:
            with np.load(path) as npz:
                if "image" not in npz.files:
                    raise EpisodeError(
                        f"{path}: no 'image' key (found {sorted(npz.files)}), expected uint8 "
                        f"(L+1, {self.image_size[0]}, {self.image_size[1]}, 3)"
                    )
                frames = npz["image"]
                actions = npz["action"] if "action" in npz.files else None
                states = npz["state"] if "state" in npz.files else None
        except _NPZ_ERRORS as err:
            raise EpisodeError(
                f"{path}: corrupt or truncated npz ({type(err).__name__}: {err}), expected a "
                "compressed npz with key 'image'"
            ) from err
        if self.resize:
            validate_frames(frames, str(path))
            frames = resize_frames(frames, self.image_size)
        validate_frames(frames, str(path), self.image_size)
        if states is not None and (states.ndim != 2 or states.shape[0] != frames.shape[0]):
            raise EpisodeError(
                f"{path}: 'state' has shape {states.shape}, expected ({frames.shape[0]}, S): "
                "one state per frame"
            )
        return Episode(frames, actions, name=path.name, source=self.name, states=states)


def _length_from_name(path: Path) -> int | None:
    match = _NAME_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def _frames_in_header(path: Path) -> int:
    """Frames of the ``"image"`` array of an ``.npz`` file, read from the array's header only."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        with zipfile.ZipFile(path) as archive, archive.open("image.npy") as member:
            reader = readers.get(np.lib.format.read_magic(member))
            shape = reader(member)[0] if reader is not None else ()
    except (*_NPZ_ERRORS, KeyError):
        return 0
    return int(shape[0]) if shape else 0
