"""One invocation at a time per run folder and stage: :func:`run_lock`.

A long run is resumed by running its command again. Run again while the first invocation is
still going, two processes would write the same checkpoints, replay and logs. :func:`run_lock`
holds an advisory lock on ``<run_dir>/<stage>.lock`` (``fcntl.flock``) for the duration of an
invocation. The operating system releases it when the process ends, however it ends (a
``SIGKILL`` included), so a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX (Windows): invocations are not guarded
    fcntl = None

__all__ = ["run_lock"]


@contextlib.contextmanager
def run_lock(run_dir: str | Path, stage: str) -> Iterator[Path]:
    """Hold the lock of ``stage`` in ``run_dir`` (created if missing) while the block runs.

    Args:
        run_dir (str or Path): the run folder.
        stage (str): the stage run, e.g. ``"finetune"``; each stage has its own lock.

    Yields:
        Path: the lock file, ``<run_dir>/<stage>.lock``; it holds the holder's process id.

    Raises:
        RuntimeError: if another process holds the lock, naming that process.

    Examples:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run_dir:
        ...     with run_lock(run_dir, "finetune") as lock:
        ...         try:
        ...             with run_lock(run_dir, "finetune"):
        ...                 pass
        ...         except RuntimeError as error:
        ...             print("refused:", "already running" in str(error))
        refused: True
    """
    path = Path(run_dir) / f"{stage}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield path
        return
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RuntimeError(
                f"run_dir {path.parent}: a {stage} invocation is already running in process "
                f"{holder} (lock {path}). Wait for it to end or stop it, or use another run_dir."
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path
