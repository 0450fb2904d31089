"""Atomic checkpoints (a kill mid-write never leaves a corrupt latest checkpoint), the random
states they carry, and the run summary."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file, fsync it, then rename it.

    The rename is atomic on POSIX file systems: readers see the old file or the new one.

    Examples:
        >>> import tempfile
        >>> path = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", {"step": 3})
        >>> load_checkpoint(path)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, with a clear error if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}.")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:
        raise RuntimeError(
            f"Checkpoint {path} could not be read ({type(error).__name__}: {error}); it is "
            "corrupt or truncated. Delete it to start over."
        ) from error


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) to store in a checkpoint.

    With a CUDA ``device``, only that GPU's state is kept: a rank of a distributed job uses
    one GPU and must not create a CUDA context on the others.
    """
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    elif torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore random states saved by :func:`rng_state` (a one-GPU state onto ``device``).

    Examples:
        >>> state = rng_state(); first = torch.rand(2)
        >>> set_rng_state(state); torch.equal(first, torch.rand(2))
        True
    """
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, path)
    return path
