"""Checkpoints of a training run: TorchRL directory checkpoints and the random states they
carry.

Single-file checkpoints and their safe loading are in :mod:`torchrl_prelar.io`
(:func:`~torchrl_prelar.io.save_checkpoint`, :func:`~torchrl_prelar.io.load_checkpoint`).
Directory checkpoints are TorchRL's :class:`~torchrl.checkpoint.Checkpoint`, kept by a
:class:`~torchrl.checkpoint.CheckpointRotation`: :func:`load_torchrl_checkpoint` refuses one
holding anything but JSON and memory-mapped tensors
(:class:`~torchrl_prelar.io.UnsafeCheckpointError`), :func:`latest_checkpoint` finds the
newest, :class:`ReplayDumpAdapter` stores a replay buffer in one without a pickle.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchrl.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointLoadResult,
    DumpLoadCheckpointAdapter,
    JSONCheckpointAdapter,
    StateDictCheckpointAdapter,
)

from torchrl_prelar.io import check_no_pickles


class ReplayDumpAdapter(DumpLoadCheckpointAdapter):
    """TorchRL's ``dump`` / ``load`` checkpoint adapter for a replay buffer, without pickles.

    Saving drops the ``prefetch.pkl`` that ``ReplayBuffer.dumps`` writes (a buffer without a
    prefetch queue has nothing in it), so the component holds memory-mapped tensors and JSON
    only; loading first refuses a folder holding any other file
    (:func:`~torchrl_prelar.io.check_no_pickles`), which ``ReplayBuffer.loads`` or TensorDict
    would unpickle. Manifests name it like its parent (``torchrl.dump_load``).

    Examples:
        >>> import tempfile
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
        >>> _ = buffer.extend(TensorDict({"reward": torch.arange(4.0)}, [4]))
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint"
        >>> checkpoint = Checkpoint()
        >>> _ = checkpoint.register("replay", buffer, adapter=ReplayDumpAdapter()).save(path)
        >>> restored = TensorDictReplayBuffer(storage=LazyTensorStorage(8))
        >>> _ = Checkpoint().register("replay", restored, adapter=ReplayDumpAdapter()).load(path)
        >>> restored[:4]["reward"]
        tensor([0., 1., 2., 3.])
    """

    def save(
        self, component: Any, path: Path, *, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        """Dump ``component`` below ``path`` and delete its ``prefetch.pkl``."""
        result = super().save(component, path, args=args, kwargs=kwargs)
        (path / "prefetch.pkl").unlink(missing_ok=True)
        return result

    def load(
        self,
        component: Any,
        path: Path,
        *,
        map_location: Any,
        tensor_load_kwargs: Mapping[str, Any],
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Refuse a folder holding a pickle
        (:class:`~torchrl_prelar.io.UnsafeCheckpointError`), then load it."""
        check_no_pickles(path)
        return super().load(
            component,
            path,
            map_location=map_location,
            tensor_load_kwargs=tensor_load_kwargs,
            args=args,
            kwargs=kwargs,
        )


def load_torchrl_checkpoint(
    checkpoint: Checkpoint,
    path: str | Path,
    *,
    components: Collection[str] | None = None,
    map_location: str | torch.device | None = None,
) -> CheckpointLoadResult:
    """Restore a TorchRL :class:`~torchrl.checkpoint.Checkpoint` directory, safely.

    The directory may hold only JSON files and memory-mapped tensors (TorchRL's default
    TensorDict payloads, the manifest, :class:`ReplayDumpAdapter` dumps), so nothing is
    unpickled. Every requested component must be in it (``strict="error"``).

    Args:
        checkpoint (Checkpoint): the components to restore.
        path (str or Path): the checkpoint directory.

    Keyword Args:
        components (collection of str, optional): the components to restore. Defaults to
            ``None`` (every registered component).
        map_location (str or torch.device, optional): where tensors are loaded. Defaults to
            ``None``.

    Returns:
        TorchRL's :class:`~torchrl.checkpoint.CheckpointLoadResult`.

    Raises:
        FileNotFoundError: if ``path`` is not a directory.
        UnsafeCheckpointError: if it holds any other file (checked before anything loads).
        torchrl.checkpoint.CheckpointError: naming ``path`` and the cause, if a tensor file
            is missing or shorter than its shape (:func:`check_memmap_sizes`), its manifest
            is invalid, a requested component is missing, or one fails to load.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint"
        >>> _ = Checkpoint(model=torch.nn.Linear(2, 1)).save(path)
        >>> model = torch.nn.Linear(2, 1)
        >>> sorted(load_torchrl_checkpoint(Checkpoint(model=model), path).loaded)
        ['model']
        >>> load_torchrl_checkpoint(Checkpoint(model=model, other=model), path)
        Traceback (most recent call last):
        ...
        torchrl.checkpoint._checkpoint.CheckpointError: ...
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint directory at {path}.")
    check_no_pickles(path)
    check_memmap_sizes(path)
    try:
        return checkpoint.load(
            path, components=components, map_location=map_location, strict="error"
        )
    except CheckpointError as error:
        raise CheckpointError(
            f"Checkpoint {path} could not be restored: {error} It is corrupt, truncated or "
            "from another version of the run; delete it to start over.",
            error.result,
        ) from error


def check_memmap_sizes(folder: str | Path) -> None:
    """Refuse memory-mapped TensorDict tensors whose file is missing or shorter than its shape.

    TensorDict maps a truncated ``.memmap`` file without an error and reads the missing
    bytes as zeros, and ``torchrl.checkpoint`` records file names but no sizes: this check,
    against the shape and dtype in each ``meta.json`` below ``folder``, is what turns a
    truncated checkpoint into an error. Keys that TensorDict percent-encodes into file names
    (those with characters outside letters, digits, ``_``, ``.``, ``-``) are not checked.

    Args:
        folder (str or Path): the folder searched for ``meta.json`` files.

    Raises:
        torchrl.checkpoint.CheckpointError: naming the file, its size and the expected one.

    Examples:
        >>> import tempfile
        >>> from tensordict import TensorDict
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = TensorDict({"weight": torch.ones(4)}).memmap(folder)
        >>> check_memmap_sizes(folder)
        >>> _ = (folder / "weight.memmap").write_bytes(b"")
        >>> check_memmap_sizes(folder)
        Traceback (most recent call last):
        ...
        torchrl.checkpoint._checkpoint.CheckpointError: ...
    """
    for meta in sorted(Path(folder).rglob("meta.json")):
        entries = json.loads(meta.read_text())
        for key, entry in entries.items():
            if (
                not isinstance(entry, dict)
                or "dtype" not in entry
                or entry.get("is_nested")
                or not re.fullmatch(r"[\w.\-]+", key)
            ):
                continue
            dtype = getattr(torch, entry["dtype"].removeprefix("torch."))
            expected = math.prod(entry["shape"]) * dtype.itemsize
            file = meta.parent / f"{key}.memmap"
            size = file.stat().st_size if file.is_file() else None
            if expected and (size is None or size < expected):
                raise CheckpointError(
                    f"{file} holds {size or 0} bytes, its shape {entry['shape']} and dtype "
                    f"{entry['dtype']} ({meta}) need {expected}: the checkpoint is truncated "
                    "or corrupt. Delete it to start over."
                )


def read_torchrl_checkpoint(path: str | Path) -> dict[str, Any]:
    """The saved state of every component of a checkpoint, without the objects it came from.

    State-dict components give their state dict, JSON components their value, dump/load
    components (a replay buffer) the folder of their dump, which their class can ``loads``.
    Loaded as safely as :func:`load_torchrl_checkpoint`.

    Args:
        path (str or Path): the checkpoint directory.

    Returns:
        a dict from component name to its saved state.

    Raises:
        torchrl.checkpoint.CheckpointError: if a component was saved by another adapter, or
            as :func:`load_torchrl_checkpoint` raises.

    Examples:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "checkpoint"
        >>> checkpoint = Checkpoint(model=torch.nn.Linear(2, 1))
        >>> _ = checkpoint.register("step", 3, adapter=JSONCheckpointAdapter()).save(path)
        >>> state = read_torchrl_checkpoint(path)
        >>> state["step"], sorted(state["model"])
        (3, ['bias', 'weight'])
    """
    path = Path(path)
    manifest = Checkpoint.manifest(path)
    checkpoint, holders, state = Checkpoint(), {}, {}
    for name, record in manifest["components"].items():
        if record["adapter"] == StateDictCheckpointAdapter.adapter_id:
            holders[name] = _StateHolder()
            checkpoint.register(name, holders[name], adapter=StateDictCheckpointAdapter())
        elif record["adapter"] == JSONCheckpointAdapter.adapter_id:
            checkpoint.register(name, None, adapter=JSONCheckpointAdapter())
        elif record["adapter"] == DumpLoadCheckpointAdapter.adapter_id:
            state[name] = path / record["path"]
        else:
            raise CheckpointError(
                f"Checkpoint {path}: component {name!r} was saved by adapter "
                f"{record['adapter']!r}; expected a state-dict, JSON or dump/load one."
            )
    result = load_torchrl_checkpoint(checkpoint, path)
    for name in checkpoint.components:
        state[name] = holders[name].state if name in holders else result.values.get(name)
    return state


class _StateHolder:
    """Receives a state dict through ``load_state_dict`` (see :func:`read_torchrl_checkpoint`)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}

    def state_dict(self) -> dict[str, Any]:
        return self.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = state


def latest_checkpoint(directory: str | Path, prefix: str = "checkpoint") -> Path | None:
    """The newest ``<prefix>-<step>`` checkpoint of a ``CheckpointRotation`` directory.

    Unlike ``CheckpointRotation.latest``, which skips a checkpoint whose manifest it cannot
    read, a newest entry that is not a valid checkpoint is an error: resuming from an older
    one, or from scratch, would silently lose training. Entries appear only by an atomic
    rename of a complete checkpoint, so a killed save never leaves an invalid one.

    Args:
        directory (str or Path): the rotation's directory.
        prefix (str, optional): the checkpoints' name prefix. Defaults to ``"checkpoint"``.

    Returns:
        the newest checkpoint's path, or ``None`` if there is none.

    Raises:
        torchrl.checkpoint.CheckpointError: naming the newest entry if it is not a valid
            checkpoint.

    Examples:
        >>> import tempfile
        >>> from torchrl.checkpoint import CheckpointRotation
        >>> rotation = CheckpointRotation(tempfile.mkdtemp(), keep_last=1)
        >>> latest_checkpoint(rotation.directory) is None
        True
        >>> path = rotation.save(Checkpoint(step={"step": 5}), step=5)
        >>> latest_checkpoint(rotation.directory) == path
        True
    """
    directory = Path(directory)
    pattern = re.compile(rf"{re.escape(prefix)}-(\d+)(\.torchrl)?")
    entries = {
        int(match.group(1)): entry
        for entry in (directory.iterdir() if directory.is_dir() else ())
        if (match := pattern.fullmatch(entry.name))
    }
    if not entries:
        return None
    newest = entries[max(entries)]
    try:
        Checkpoint.manifest(newest)
    except (CheckpointError, OSError) as error:
        raise CheckpointError(
            f"{newest} is not a valid TorchRL checkpoint ({error}); it is corrupt or "
            "truncated. Delete it to resume from the one before (or from scratch)."
        ) from error
    return newest


def remove_interrupted_saves(directory: str | Path, prefix: str = "checkpoint") -> list[Path]:
    """Delete what a killed ``CheckpointRotation`` save or prune left in ``directory``.

    ``Checkpoint.save`` writes into a hidden ``.<prefix>-<step>.stage-<id>`` folder and
    renames it; the rotation deletes old checkpoints by renaming them to hidden
    ``.<prefix>-<step>.delete-<id>`` folders first. A kill leaves those hidden folders
    behind; they are never read. Call it only from the process that writes the checkpoints,
    before it saves.

    Args:
        directory (str or Path): the rotation's directory.
        prefix (str, optional): the checkpoints' name prefix. Defaults to ``"checkpoint"``.

    Returns:
        the paths deleted.

    Examples:
        >>> import tempfile
        >>> directory = Path(tempfile.mkdtemp())
        >>> (directory / ".checkpoint-000000000005.stage-1a2b").mkdir()
        >>> [path.name for path in remove_interrupted_saves(directory)]
        ['.checkpoint-000000000005.stage-1a2b']
    """
    directory = Path(directory)
    leftovers = sorted(directory.glob(f".{prefix}-*")) if directory.is_dir() else []
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover)
        else:
            leftover.unlink()
    return leftovers


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) to store in a checkpoint.

    With a CUDA ``device``, only that GPU's state is kept: a rank of a distributed job uses
    one GPU and must not create a CUDA context on the others. Every state is a tensor or
    plain Python values, so :func:`~torchrl_prelar.io.load_checkpoint` reads it with
    ``weights_only=True``.

    Args:
        device (torch.device, optional): the one GPU whose state is kept. Defaults to
            ``None`` (every GPU's, when CUDA is available).

    Examples:
        >>> state = rng_state()
        >>> sorted(state["numpy"]), state["numpy"]["key"].dtype
        (['cached_gaussian', 'has_gauss', 'key', 'pos'], torch.int64)
        >>> import tempfile
        >>> from torchrl_prelar.io import load_checkpoint, save_checkpoint
        >>> path = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", {"rng": state})
        >>> load_checkpoint(path)["rng"]["numpy"]["pos"] == state["numpy"]["pos"]
        True
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

    Args:
        state (dict): what :func:`rng_state` returned.
        device (torch.device, optional): the GPU a one-GPU state is restored onto. Defaults
            to ``None``.

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
