"""File IO: atomic writes (a reader sees the old file or the new one,
never half of one), safe checkpoint loading, the run summary and the names of the files a run
leaves.

Single-file checkpoints (:func:`save_checkpoint`) hold only tensors and plain Python values
(dicts, lists, tuples, numbers, strings, ``None``) and are loaded with
``torch.load(weights_only=True)``: a file holding any other object is refused with
:class:`UnsafeCheckpointError` before anything in it runs. A saved replay folder is refused
the same way when it holds anything but memory-mapped tensors and JSON
(:func:`check_no_pickles`).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "PRETRAINED_MODEL",
    "UnsafeCheckpointError",
    "atomic_write",
    "atomic_write_text",
    "check_no_pickles",
    "load_checkpoint",
    "save_checkpoint",
    "temporary_path",
    "update_summary",
]

#: The pre-trained world model a run leaves in its ``run_dir``: ``{"world_model": state dict,
#: "world_model_kwargs": the world model's resolved arguments, "evaluation": held-out
#: evaluation settings}``, read by fine-tuning and by ``python -m torchrl_prelar.evaluation``.
PRETRAINED_MODEL = "pretrained_world_model.pt"


def temporary_path(path: str | Path) -> Path:
    """Where :func:`atomic_write` stages ``path``: a hidden ``.tmp`` file beside it.

    The file is named after the writing process and thread, so that concurrent writers of
    one file (several runs sharing a data folder) never stage into the same file.

    Args:
        path (str or Path): the file to be written.

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

    Args:
        path (str or Path): the file to write.
        write (Callable[[IO[bytes]], None]): writes the content to the binary handle it is
            given.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

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

    Args:
        path (str or Path): the file to write.
        text (str): its content.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile
        >>> atomic_write_text(Path(tempfile.mkdtemp()) / "a.json", "{}").read_text()
        '{}'
    """
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds objects outside the types :func:`load_checkpoint` accepts.

    Examples:
        >>> issubclass(UnsafeCheckpointError, ValueError)
        True
    """


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, fsync it, then rename it.

    The rename is atomic on POSIX file systems: readers see the old file or the new one.

    Args:
        path (str or Path): the checkpoint file.
        state (dict): tensors and plain Python values only, so that
            :func:`load_checkpoint` accepts it.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Examples:
        >>> import tempfile
        >>> path = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", {"step": 3})
        >>> load_checkpoint(path)["step"]
        3
    """
    return atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error if it is bad.

    Loads with ``weights_only=True``: tensors, dicts, lists, tuples, sets, numbers, strings,
    ``None`` and the other types of PyTorch's weights-only allowlist (``torch.Size``,
    dtypes, devices, ``OrderedDict``); nothing else is unpickled.

    Args:
        path (str or Path): the checkpoint file.
        map_location (str or torch.device, optional): where tensors are loaded. Defaults to
            ``"cpu"``.

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        UnsafeCheckpointError: if the file holds any other object (an arbitrary pickled
            object, or a numpy random state); it is refused before anything in it runs.
        RuntimeError: if the file is corrupt or truncated.

    Examples:
        >>> import pickle, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "last.pt"
        >>> _ = save_checkpoint(path, {"step": 3, "weights": torch.ones(2)})
        >>> load_checkpoint(path)["weights"]
        tensor([1., 1.])
        >>> torch.save({"call": pickle.loads}, path)
        >>> load_checkpoint(path)
        Traceback (most recent call last):
        ...
        torchrl_prelar.io.UnsafeCheckpointError: ...
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_types(error)
        if refused is None:
            raise _corrupt(path, error.__context__ or error) from error
        raise UnsafeCheckpointError(
            f"Checkpoint {path} holds objects outside the allowed types (tensors and plain "
            f"Python values), here {refused}, and will not be unpickled. A checkpoint holding "
            "a numpy random state is refused too: delete the file and run that stage again."
        ) from None
    except Exception as error:
        raise _corrupt(path, error) from error


def check_no_pickles(folder: str | Path, suffixes: tuple[str, ...] = (".memmap", ".json")) -> None:
    """Refuse a saved replay folder (fine-tuning replay, video buffer) holding other files.

    TorchRL's ``ReplayBuffer.loads`` unpickles ``prefetch.pkl`` and TensorDict's
    ``load_memmap`` unpickles non-tensor fields (``other.pickle``, ``pickle.pkl``); a folder of
    memory-mapped tensors and JSON metadata only gives them nothing to unpickle.

    Args:
        folder (str or Path): the saved folder.
        suffixes (tuple of str, optional): the file suffixes accepted. Defaults to
            ``(".memmap", ".json")``.

    Raises:
        UnsafeCheckpointError: naming the folder and the first few other files.

    Examples:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "meta.json").write_text("{}")
        >>> check_no_pickles(folder)
        >>> _ = (folder / "prefetch.pkl").write_bytes(b"")
        >>> check_no_pickles(folder)
        Traceback (most recent call last):
        ...
        torchrl_prelar.io.UnsafeCheckpointError: ...
    """
    folder = Path(folder)
    others = sorted(
        str(file.relative_to(folder))
        for file in folder.rglob("*")
        if not file.is_dir() and file.suffix not in suffixes
    )
    if others:
        raise UnsafeCheckpointError(
            f"{folder} holds files other than {', '.join(suffixes)} ({', '.join(others[:5])}), "
            "which would be unpickled on load; it will not be loaded. Delete it: fine-tuning "
            "then re-fills its replay, pre-training re-writes its video buffer."
        )


def _refused_types(error: pickle.UnpicklingError) -> str | None:
    """What the weights-only unpickler refused to build (``None``: the file is malformed).

    ``torch.load`` re-raises the unpickler's error with a generic message; the original,
    naming the refused global or class, is its ``__context__``.
    """
    message = str(error.__context__ or error)
    names = re.findall(r"GLOBAL (\S+)", message)
    if names:
        return ", ".join(dict.fromkeys(names))
    if "allowlisted" in message:
        return message.rsplit("but got ", 1)[-1]
    return None


def _corrupt(path: Path, error: Exception) -> RuntimeError:
    """The error for a checkpoint that is not a readable ``torch.save`` file."""
    return RuntimeError(
        f"Checkpoint {path} could not be read ({type(error).__name__}: {error}); it is "
        "corrupt or truncated (or not a torch.save file). Delete it to start over."
    )


def update_summary(
    run_dir: str | Path, section: str, values: dict[str, Any], *, merge: bool = False
) -> Path:
    """Write ``values`` as section ``section`` of ``run_dir/summary.json`` (atomically).

    Args:
        run_dir (str or Path): the run folder.
        section (str): the top-level entry written.
        values (dict): JSON-serialisable values of the section.

    Keyword Args:
        merge (bool, optional): add the entries of ``values`` to the section and keep its
            others, instead of replacing it. Defaults to ``False``.

    Returns:
        the path of ``summary.json``.

    Examples:

        >>> import tempfile
        >>> run_dir = tempfile.mkdtemp()
        >>> path = update_summary(run_dir, "pretrain", {"updates": 3})
        >>> path = update_summary(run_dir, "pretrain", {"latent_actions": {}}, merge=True)
        >>> sorted(json.loads(path.read_text())["pretrain"])
        ['latent_actions', 'updates']
    """
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary[section] = {**summary.get(section, {}), **values} if merge else values
    return atomic_write_text(path, json.dumps(summary, indent=2))
