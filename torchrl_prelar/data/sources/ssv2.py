"""Something-Something-V2 as extracted frames.

Layout: ``<root>/<video_id>/<%06d>.jpg`` (64x64 frames, numbered from 000001) and a list file
with one line ``<video_id> <num_frames> <label>`` per video. Videos with fewer than ``T + 1``
frames are skipped from the list alone, without decoding.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
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
from torchrl_prelar.data.sources.video_folder import _require_imageio, read_image

__all__ = ["SSv2Source"]


@dataclass(frozen=True)
class _ListEntry:
    video_id: str
    num_frames: int
    label: str


class SSv2Source(EpisodeSource):
    """Episodes from Something-Something-V2 frame folders listed in a list file.

    A listed video whose folder is missing, whose frame count does not match the list, or with a
    corrupt jpg is yielded as :class:`~torchrl_prelar.data.episodes.SkippedEpisode`.

    Args:
        root (str or Path): folder holding one sub-folder of ``%06d.jpg`` frames per video.
        list_file (str or Path): text file with lines ``<video_id> <num_frames> <label>``.

    Keyword Args:
        image_size (tuple of int, optional): expected ``(H, W)`` of the frames. Defaults to
            ``(64, 64)``.
        resize (bool, optional): resize frames of another size to ``image_size`` instead of
            skipping the video. Defaults to ``False``.
        name (str, optional): source name in the statistics. Defaults to ``"ssv2"``.

    Raises:
        FileNotFoundError: if ``root`` or ``list_file`` is missing.
        ValueError: if a line of the list file is malformed (naming file and line) or the list
            is empty.

    Examples:
        >>> import tempfile, imageio.v3 as iio
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "42").mkdir()
        >>> for i in range(1, 4):
        ...     iio.imwrite(root / "42" / f"{i:06d}.jpg", np.zeros((64, 64, 3), np.uint8))
        >>> _ = (root / "list.txt").write_text("42 3 7\\n")
        >>> next(iter(SSv2Source(root, root / "list.txt"))).frames.shape
        (3, 64, 64, 3)
    """

    def __init__(
        self,
        root: str | Path,
        list_file: str | Path,
        *,
        image_size: tuple[int, int] = (64, 64),
        resize: bool = False,
        name: str = "ssv2",
    ) -> None:
        _require_imageio()
        self.root = Path(root)
        self.list_file = Path(list_file)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder (expected <video_id>/%06d.jpg)")
        if not self.list_file.is_file():
            raise FileNotFoundError(
                f"{self.list_file}: list file not found (expected lines <id> <num_frames> <label>)"
            )
        self.entries = _read_list(self.list_file)
        self.image_size = tuple(image_size)
        self.resize = resize
        self.name = name

    def __len__(self) -> int:
        return len(self.entries)

    def num_frames_hint(self) -> int:
        """Frames of all listed videos, as the list file counts them."""
        return sum(entry.num_frames for entry in self.entries)

    def episodes(
        self, exclude: Collection[str] = frozenset(), min_frames: int = 0
    ) -> Iterator[Episode | SkippedEpisode]:
        for entry in self.entries:
            if entry.video_id in exclude:
                continue
            if entry.num_frames < min_frames:
                reason = (
                    f"{self.root / entry.video_id}: {entry.num_frames} frames in "
                    f"{self.list_file.name}, expected >= {min_frames}"
                )
                yield SkippedEpisode(entry.video_id, self.name, reason, "too_short")
                continue
            try:
                frames = self._load(entry)
            except EpisodeError as err:
                yield err.skipped(entry.video_id, self.name)
                continue
            yield Episode(frames, name=entry.video_id, source=self.name)

    def _load(self, entry: _ListEntry) -> np.ndarray:
        folder = self.root / entry.video_id
        if not folder.is_dir():
            raise EpisodeError(
                f"{folder}: listed in {self.list_file} with {entry.num_frames} frames, "
                "but the folder is missing",
                kind="missing",
            )
        paths = [folder / f"{i:06d}.jpg" for i in range(1, entry.num_frames + 1)]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise EpisodeError(
                f"{folder}: {len(missing)} of the {entry.num_frames} frames listed in "
                f"{self.list_file.name} are missing (first: {missing[0]})",
                kind="missing",
            )
        frames = np.stack([read_image(p) for p in paths])
        if self.resize:
            frames = resize_frames(frames, self.image_size)
        return validate_frames(frames, str(folder), self.image_size)


def _read_list(list_file: Path) -> list[_ListEntry]:
    entries = []
    for line_no, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(
                f"{list_file}:{line_no}: {line!r} is not '<video_id> <num_frames> <label>'"
            )
        entries.append(_ListEntry(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""))
    if not entries:
        raise ValueError(f"{list_file}: empty list file (expected <id> <num_frames> <label> lines)")
    return entries
