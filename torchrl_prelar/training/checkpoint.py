"""Atomic checkpoints (a kill mid-write never leaves a corrupt latest checkpoint), the random
states they carry, and the run summary.

Checkpoints hold only tensors and plain Python values (dicts, lists, tuples, numbers,
strings, ``None``) and are loaded with ``torch.load(weights_only=True)``: a file holding any
other object is refused with :class:`UnsafeCheckpointError` before anything in it runs.
"""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrl_prelar.io import atomic_write, atomic_write_text


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds objects outside the types :func:`load_checkpoint` accepts.

    Examples:
        >>> issubclass(UnsafeCheckpointError, ValueError)
        True
    """


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, fsync it, then rename it.

    The rename is atomic on POSIX file systems: readers see the old file or the new one.

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

    Raises:
        FileNotFoundError: if there is no file at ``path``.
        UnsafeCheckpointError: if the file holds any other object (an arbitrary pickled
            object, or the numpy random state of checkpoints written before safe loading);
            it is refused before anything in it runs.
        RuntimeError: if the file is corrupt or truncated.

    Examples:
        >>> import pickle, tempfile
        >>> path = Path(tempfile.mkdtemp()) / "last.pt"
        >>> _ = save_checkpoint(path, {"rng": rng_state(), "weights": torch.ones(2)})
        >>> load_checkpoint(path)["weights"]
        tensor([1., 1.])
        >>> torch.save({"call": pickle.loads}, path)
        >>> load_checkpoint(path)
        Traceback (most recent call last):
        ...
        torchrl_prelar.training.checkpoint.UnsafeCheckpointError: ...
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
            f"Python values), here {refused}, and will not be unpickled. Checkpoints of "
            "torchrl_prelar written before safe loading (numpy random state) are refused "
            "too: delete the file and run that stage again."
        ) from None
    except Exception as error:
        raise _corrupt(path, error) from error


def check_no_pickles(folder: str | Path, suffixes: tuple[str, ...] = (".memmap", ".json")) -> None:
    """Refuse a saved replay folder (fine-tuning replay, video buffer) holding other files.

    TorchRL's ``ReplayBuffer.loads`` unpickles ``prefetch.pkl`` and TensorDict's
    ``load_memmap`` unpickles non-tensor fields (``other.pickle``, ``pickle.pkl``); a folder of
    memory-mapped tensors and JSON metadata only gives them nothing to unpickle.

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
        torchrl_prelar.training.checkpoint.UnsafeCheckpointError: ...
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


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) to store in a checkpoint.

    With a CUDA ``device``, only that GPU's state is kept: a rank of a distributed job uses
    one GPU and must not create a CUDA context on the others. Every state is a tensor or
    plain Python values, so :func:`load_checkpoint` reads it with ``weights_only=True``.

    Examples:
        >>> state = rng_state()
        >>> sorted(state["numpy"]), state["numpy"]["key"].dtype
        (['cached_gaussian', 'has_gauss', 'key', 'pos'], torch.int64)
    """
    state = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    """numpy's global Mersenne Twister state as a tensor and plain numbers."""
    _, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    return {
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached_gaussian),
    }


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore random states saved by :func:`rng_state` (a one-GPU state onto ``device``).

    Examples:
        >>> state = rng_state(); first = torch.rand(2)
        >>> set_rng_state(state); torch.equal(first, torch.rand(2))
        True
    """
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["key"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "cuda_device" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_device"], device)


def update_summary(
    run_dir: str | Path, section: str, values: dict[str, Any], *, merge: bool = False
) -> Path:
    """Write ``values`` as section ``section`` of ``run_dir/summary.json`` (atomically).

    With ``merge`` the entries of ``values`` are added to the section, its others kept.

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
