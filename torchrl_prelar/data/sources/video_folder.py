"""Any folder of videos: video files (mp4, webm, gif, ... via imageio) or image-sequence folders.

Every video file under ``root`` (searched recursively) is one episode, and so is every folder that
directly holds image files (frames in natural name order: ``2.png`` before ``10.png``). Frames are
converted to RGB and resized to ``image_size`` (64x64 by default).

GIF encoders store identical consecutive frames once, so a GIF of a static scene decodes to fewer
frames than were written; prefer a video codec or image folders when frame counts matter.
"""

from __future__ import annotations

import importlib.util
import math
import re
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

__all__ = ["VideoFolderSource", "read_image"]

_has_imageio = importlib.util.find_spec("imageio") is not None

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".avi", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _require_imageio() -> None:
    if not _has_imageio:
        raise ImportError(
            "reading videos and images needs imageio (pip install imageio imageio-ffmpeg)"
        )


def _to_rgb(image: np.ndarray, path: Path) -> np.ndarray:
    """``[..., H, W]`` gray, ``[..., H, W, 3]`` RGB or ``[..., H, W, 4]`` RGBA -> uint8 RGB."""
    if image.dtype != np.uint8:
        raise EpisodeError(f"{path}: pixels of dtype {image.dtype}, expected uint8")
    if image.shape[-1] == 4:
        return image[..., :3]
    if image.shape[-1] == 3:
        return image
    return np.repeat(image[..., None], 3, axis=-1)


def read_image(path: str | Path) -> np.ndarray:
    """Decodes one image file to uint8 RGB ``[H, W, 3]``.

    Args:
        path (str or Path): the image file.

    Raises:
        EpisodeError: if the file cannot be decoded (corrupt or truncated), naming it.

    Examples:
        >>> import tempfile, imageio.v3 as iio
        >>> path = Path(tempfile.mkdtemp()) / "000001.jpg"
        >>> iio.imwrite(path, np.zeros((64, 64, 3), np.uint8))
        >>> read_image(path).shape
        (64, 64, 3)
    """
    _require_imageio()
    import imageio.v3 as iio

    path = Path(path)
    try:
        image = iio.imread(path)
    except Exception as err:  # decoders raise many unrelated types for a bad file
        raise EpisodeError(f"{path}: cannot decode image ({_first_line(err)})") from err
    if image.ndim not in (2, 3):
        raise EpisodeError(f"{path}: image of shape {image.shape}, expected [H, W(, C)]")
    return _to_rgb(image, path)


def read_video(path: str | Path) -> np.ndarray:
    """Decodes all frames of a video file to uint8 RGB ``[N, H, W, 3]``.

    Args:
        path (str or Path): the video file.

    Raises:
        EpisodeError: if the file cannot be decoded (corrupt or truncated), naming it.
    """
    _require_imageio()
    import imageio.v3 as iio

    path = Path(path)
    try:
        frames = iio.imread(path, index=None)
    except Exception as err:  # decoders raise many unrelated types for a bad file
        raise EpisodeError(f"{path}: cannot decode video ({_first_line(err)})") from err
    if frames.ndim == 3 and frames.shape[-1] in (3, 4):  # a single colour frame
        frames = frames[None]
    if frames.ndim not in (3, 4) or frames.shape[0] == 0:
        raise EpisodeError(f"{path}: decoded shape {frames.shape}, expected [N, H, W, 3]")
    return _to_rgb(frames, path)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class VideoFolderSource(EpisodeSource):
    """Episodes from the video files and image-sequence folders found under ``root``.

    Args:
        root (str or Path): folder searched recursively.

    Keyword Args:
        image_size (tuple of int, optional): ``(H, W)`` every frame is resized to; ``None``
            keeps the native size (then every video must have the same size, or the writer
            skips the odd ones). Defaults to ``(64, 64)``.
        name (str, optional): source name in the statistics. Defaults to ``"video_folder"``.

    Raises:
        FileNotFoundError: if ``root`` is missing or holds no video file and no image folder.

    Examples:
        >>> import tempfile, imageio.v3 as iio
        >>> root = Path(tempfile.mkdtemp())
        >>> frames = np.arange(30, dtype=np.uint8)[:, None, None, None].repeat(96, 1)
        >>> iio.imwrite(root / "clip.gif", np.broadcast_to(frames, (30, 96, 128, 3)))
        >>> next(iter(VideoFolderSource(root))).frames.shape
        (30, 64, 64, 3)
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_size: tuple[int, int] | None = (64, 64),
        name: str = "video_folder",
    ) -> None:
        _require_imageio()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root}: not a folder (expected videos or image folders)")
        self.items = self._find_items()
        if not self.items:
            raise FileNotFoundError(
                f"{self.root}: no video ({', '.join(VIDEO_EXTENSIONS)}) and no folder of images "
                f"({', '.join(IMAGE_EXTENSIONS)}) found"
            )
        self.image_size = tuple(image_size) if image_size is not None else None
        self.name = name

    def _find_items(self) -> list[Path]:
        items = []
        for path in sorted(self.root.rglob("*")):
            suffix = path.suffix.lower()
            if path.is_file() and suffix in VIDEO_EXTENSIONS:
                items.append(path)
            elif path.is_dir() and any(_is_image(child) for child in path.iterdir()):
                items.append(path)
        if any(_is_image(child) for child in self.root.iterdir()):
            items.append(self.root)
        return items

    def __len__(self) -> int:
        return len(self.items)

    def num_frames_hint(self) -> int | None:
        """Frames of all items, counted without decoding them to arrays.

        The count is the images of each folder and the frame count of each video file (0 for
        a file that cannot be read: it is skipped as corrupt when decoded); ``None`` if a
        video's count cannot be known (a container without one, and no ``imageio-ffmpeg`` to
        count its frames).
        """
        total = 0
        for path in self.items:
            if path.is_dir():
                total += sum(1 for child in path.iterdir() if _is_image(child))
                continue
            count = _video_frames(path)
            if count is None:
                return None
            total += count
        return total

    def _item_name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix() or "."

    def episodes(
        self, exclude: Collection[str] = frozenset(), min_frames: int = 0
    ) -> Iterator[Episode | SkippedEpisode]:
        for path in self.items:
            name = self._item_name(path)
            if name in exclude:
                continue
            try:
                frames = self._decode(path)
                if self.image_size is not None:
                    frames = resize_frames(frames, self.image_size)
                validate_frames(frames, str(path), self.image_size)
            except EpisodeError as err:
                yield err.skipped(name, self.name)
                continue
            yield Episode(frames, name=name, source=self.name)

    def _decode(self, path: Path) -> np.ndarray:
        if path.is_file():
            return read_video(path)
        images = sorted((p for p in path.iterdir() if _is_image(p)), key=_natural_key)
        frames = [read_image(p) for p in images]
        shapes = {frame.shape for frame in frames}
        if len(shapes) > 1:
            raise EpisodeError(f"{path}: images of different sizes {sorted(shapes)}")
        return np.stack(frames)


def _video_frames(path: Path) -> int | None:
    """The frame count of a video file from its properties, or counted by ffmpeg when the
    container does not record it (mp4, webm, ...); 0 if the file cannot be read."""
    import imageio.v3 as iio

    try:
        properties = iio.improps(path, index=None)
    except Exception:  # decoders raise many unrelated types for a bad file
        return 0
    count = properties.n_images if properties.is_batch else 1
    if count is not None and math.isfinite(count):
        return int(count)
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        return None
    import imageio_ffmpeg

    try:
        return imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except Exception:  # ffmpeg fails on a truncated or corrupt file
        return 0


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
