"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_write_text", "temporary_path"]


def temporary_path(path: str | Path) -> Path:
    """Where :func:`atomic_write` stages ``path``: a hidden ``.tmp`` file beside it, named
    after the writing process and thread, so that concurrent writers of one file (several
    runs sharing a data folder) never stage into the same file.

    Examples:
        >>> name = temporary_path("runs/a/last.pt").name
        >>> name.startswith(".last.pt.") and name.endswith(".tmp")
        True
    """
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` with ``write(handle)`` through a temporary file, fsync it, rename it.

    The parent folder is created if needed and fsynced after the rename, so the new file
    survives a crash; if ``write`` raises, ``path`` is left as it was and the temporary file
    is removed.

    Examples:
        >>> import tempfile
        >>> path = atomic_write(Path(tempfile.mkdtemp()) / "a.bin", lambda f: f.write(b"ok"))
        >>> path.read_bytes()
        b'ok'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write` of UTF-8 ``text``.

    Examples:
        >>> import tempfile
        >>> atomic_write_text(Path(tempfile.mkdtemp()) / "a.json", "{}").read_text()
        '{}'
    """
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
