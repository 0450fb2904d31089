"""Data-parallel pre-training with PyTorch's own ``torch.distributed``, launched by torchrun.

``torchrun --nproc-per-node N examples/dreamer_prelar.py stage=pretrain`` starts N copies of
the example; each reads its place in the job from the environment torchrun sets (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`init_distributed`
turns that into a :class:`DistributedContext`: the process group (NCCL on GPUs, gloo on CPU,
with a bounded timeout), the device of the rank, and the few collective operations the
pre-training loop needs. Without those variables (or with ``WORLD_SIZE=1``) it returns a
single-process context whose operations are no-ops, so the same code runs unchanged in one
process. See ``docs/distributed.md``.

Examples:
    >>> context = init_distributed("cpu", env={})
    >>> context.world_size, context.is_main, context.is_distributed
    (1, True, False)
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from torchrl_prelar.training.checkpoint import rng_state, set_rng_state

__all__ = [
    "BACKENDS",
    "LR_SCALINGS",
    "DistributedContext",
    "choose_backend",
    "distributed_session",
    "init_distributed",
    "rank_seed",
    "resolve_device",
    "scaled_lr",
    "seed_everything",
]

BACKENDS = ("auto", "nccl", "gloo")
LR_SCALINGS = ("none", "linear")
_T = TypeVar("_T")


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The seed of rank ``rank``'s random stream from update ``step`` on.

    Mixed by NumPy's :class:`~numpy.random.SeedSequence`, so nearby ``(seed, rank, step)``
    give unrelated streams.

    Args:
        seed (int): the run's base seed.
        rank (int): the global rank.
        step (int): the update the stream starts at.

    Raises:
        ValueError: if an argument is negative.

    Examples:
        >>> rank_seed(0, 0, 0) == rank_seed(0, 0, 0), rank_seed(0, 0, 0) == rank_seed(0, 1, 0)
        (True, False)
    """
    if min(seed, rank, step) < 0:
        raise ValueError(
            f"rank_seed expects non-negative seed, rank and step, got {(seed, rank, step)}."
        )
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and every CUDA device), NumPy and Python's ``random`` with ``seed``.

    Args:
        seed (int): random seed for Python, NumPy and torch; NumPy receives it modulo 2**32.

    Examples:
        >>> seed_everything(3); first = torch.rand(1)
        >>> seed_everything(3); torch.equal(first, torch.rand(1))
        True
    """
    import random

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def resolve_device(device: str | torch.device, local_rank: int, world_size: int) -> torch.device:
    """The device of a rank: ``cuda:LOCAL_RANK`` for ``device="cuda"``, else ``device``.

    A device index is refused when several ranks run: each rank takes the GPU of its local
    rank, so that torchrun's ``--nproc-per-node`` is the number of GPUs used per machine.

    Args:
        device (str or torch.device): the requested device.
        local_rank (int): the rank within its machine.
        world_size (int): number of ranks.

    Raises:
        ValueError: if a GPU index is given while several ranks run.

    Examples:
        >>> resolve_device("cuda", local_rank=3, world_size=4)
        device(type='cuda', index=3)
        >>> resolve_device("cpu", local_rank=1, world_size=2)
        device(type='cpu')
    """
    device = torch.device(device)
    if device.type != "cuda" or world_size == 1:
        return device
    if device.index is not None:
        raise ValueError(
            f"device={device} names one GPU, but {world_size} ranks run: expected device=cuda, "
            "each rank then uses cuda:LOCAL_RANK."
        )
    return torch.device("cuda", local_rank)


def choose_backend(device: torch.device, backend: str = "auto") -> str:
    """The process-group backend: ``auto`` is NCCL for CUDA devices and gloo otherwise.

    Args:
        device (torch.device): the rank's device.
        backend (str, optional): ``"auto"``, ``"nccl"`` or ``"gloo"``. Defaults to
            ``"auto"``.

    Raises:
        ValueError: if ``backend`` is unknown, or ``"nccl"`` without a CUDA device.

    Examples:
        >>> choose_backend(torch.device("cuda", 0)), choose_backend(torch.device("cpu"))
        ('nccl', 'gloo')
    """
    if backend not in BACKENDS:
        raise ValueError(f"distributed.backend must be one of {BACKENDS}, got {backend!r}.")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ValueError(f"The nccl backend needs device=cuda, got device={device}.")
    return backend


def scaled_lr(lr: float, world_size: int, scaling: str = "none") -> float:
    """The learning rate of a run on ``world_size`` ranks.

    ``"none"`` keeps ``lr`` (the effective batch grows with the ranks, the step size does
    not); ``"linear"`` multiplies it by ``world_size`` (Goyal et al., 2017).

    Args:
        lr (float): the single-process learning rate.
        world_size (int): number of ranks.
        scaling (str, optional): ``"none"`` or ``"linear"``. Defaults to ``"none"``.

    Raises:
        ValueError: if ``scaling`` is unknown.

    Examples:
        >>> scaled_lr(3e-4, 4), scaled_lr(3e-4, 4, "linear")
        (0.0003, 0.0012)
    """
    if scaling not in LR_SCALINGS:
        raise ValueError(f"distributed.lr_scaling must be one of {LR_SCALINGS}, got {scaling!r}.")
    return lr * world_size if scaling == "linear" else lr


@dataclass
class DistributedContext:
    """Where this process stands in a data-parallel job, and the collectives the loop uses.

    The default instance is a single process: every operation is then a no-op (``wrap``
    returns the module itself, ``mean`` its input), so single-process runs do not use
    torch.distributed at all.

    Args:
        rank (int, optional): global rank; rank 0 writes checkpoints, logs and media.
            Defaults to ``0``.
        world_size (int, optional): number of ranks. Defaults to ``1``.
        local_rank (int, optional): rank within its machine (selects the GPU). Defaults to
            ``0``.
        device (torch.device, optional): this rank's device. Defaults to the CPU.
        seed (int, optional): base of the per-rank random streams (see :meth:`seed_rank`).
            Defaults to ``0``.
        find_unused_parameters (bool, optional): passed to
            :class:`~torch.nn.parallel.DistributedDataParallel`. Defaults to ``False``.
        sync_batchnorm (bool, optional): convert BatchNorm layers to
            :class:`~torch.nn.SyncBatchNorm` (CUDA only). Defaults to ``False``.

    Examples:
        >>> context = DistributedContext()
        >>> module = nn.Linear(2, 2)
        >>> context.wrap(module) is module, context.all_gather_object("a")
        (True, ['a'])
        >>> context.main_first(lambda: 7)
        7
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    find_unused_parameters: bool = False
    sync_batchnorm: bool = False

    @property
    def is_distributed(self) -> bool:
        """True when more than one rank runs."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the rank that writes checkpoints, logs, media and the summary."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (when distributed).

        DDP broadcasts rank 0's parameters and buffers at construction and averages the
        gradients over the ranks during ``backward``. The wrapped module keeps its own
        ``state_dict`` (no ``module.`` prefix): save and load through it, not the wrapper.

        Args:
            module (nn.Module): the module to train.

        Raises:
            ValueError: if ``sync_batchnorm`` is set on a device other than CUDA.
        """
        if not self.is_distributed:
            return module
        if self.sync_batchnorm:
            if self.device.type != "cuda":
                raise ValueError(
                    "distributed.sync_batchnorm needs device=cuda: PyTorch's SyncBatchNorm has "
                    f"no {self.device.type} implementation."
                )
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return DistributedDataParallel(
            module,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
        )

    def barrier(self) -> None:
        """Wait for every rank (a no-op in one process)."""
        if self.is_distributed:
            dist.barrier()

    def main_first(self, build: Callable[[], _T]) -> _T:
        """Run ``build`` on rank 0, then (after a barrier) on the other ranks.

        For shared files such as the memory-mapped video buffer: rank 0 writes them, the
        others only reopen what rank 0 wrote and never race on its creation.

        Args:
            build (Callable[[], T]): makes the object; called once on every rank.

        Returns:
            what ``build`` returned on this rank.
        """
        result = build() if self.is_main else None
        self.barrier()
        return result if self.is_main else build()

    def mean(self, metrics: TensorDictBase) -> TensorDictBase:
        """Average a TensorDict of scalars over the ranks (one all-reduce); every rank calls it.

        Args:
            metrics (TensorDictBase): scalar entries.

        Examples:
            >>> DistributedContext().mean(TensorDict(loss=torch.tensor(2.0)))["loss"]
            tensor(2.)
        """
        if not self.is_distributed:
            return metrics
        keys = sorted(metrics.keys(True, True), key=str)
        values = torch.stack([metrics.get(key).detach().float().reshape(()) for key in keys])
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= self.world_size
        return TensorDict(dict(zip(keys, values.unbind(), strict=True)), [])

    def all_gather_object(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (a list of one outside a job).

        Args:
            value (Any): a picklable value of this rank.
        """
        if not self.is_distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def seed_rank(self, step: int) -> None:
        """Seed this process with :func:`rank_seed` of ``(seed, rank, step)``.

        Args:
            step (int): the update the stream starts at.
        """
        seed_everything(rank_seed(self.seed, self.rank, step))

    def gather_rng_states(self) -> list[dict[str, Any]]:
        """Every rank's random state (a collective: all ranks call it), for a checkpoint."""
        device = self.device if self.is_distributed else None
        return self.all_gather_object(rng_state(device))

    def restore_rng_states(self, states: list[dict[str, Any]], step: int) -> None:
        """Continue this rank's random stream after a resume at update ``step``.

        ``states`` holds one state per rank of the run that wrote the checkpoint. At the same
        world size each rank restores its own, so the run continues sample for sample; at
        another world size the streams are re-derived from ``(seed, rank, step)``.

        Args:
            states (list of dict): the random states of the checkpoint, one per rank.
            step (int): the update the run resumes at.

        Examples:

            >>> context = DistributedContext(seed=1)
            >>> context.restore_rng_states([rng_state(), rng_state()], step=5); a = torch.rand(1)
            >>> seed_everything(rank_seed(1, 0, 5)); torch.equal(a, torch.rand(1))
            True
        """
        if len(states) == self.world_size:
            set_rng_state(states[self.rank], self.device)
        else:
            self.seed_rank(step)

    def close(self) -> None:
        """Destroy the process group (if this context created one)."""
        if self.is_distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(
    device: str | torch.device = "cpu",
    *,
    seed: int = 0,
    backend: str = "auto",
    timeout_s: float = 1800.0,
    find_unused_parameters: bool = False,
    sync_batchnorm: bool = False,
    env: Mapping[str, str] | None = None,
) -> DistributedContext:
    """Join the job torchrun started (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in ``env``).

    Args:
        device (str or torch.device, optional): ``"cpu"`` or ``"cuda"``; with several ranks
            ``"cuda"`` becomes ``cuda:LOCAL_RANK`` (see :func:`resolve_device`). Defaults to
            ``"cpu"``.

    Keyword Args:
        seed (int, optional): base seed of the per-rank random streams. Defaults to ``0``.
        backend (str, optional): ``"auto"`` (NCCL on CUDA, gloo on CPU), ``"nccl"`` or
            ``"gloo"``. Defaults to ``"auto"``.
        timeout_s (float, optional): how long a collective may wait for the other ranks
            before the job fails (a dead or stuck rank never hangs the others longer than
            this). Defaults to ``1800.0``.
        find_unused_parameters (bool, optional): see :class:`DistributedContext`. Defaults
            to ``False``.
        sync_batchnorm (bool, optional): see :class:`DistributedContext`. Defaults to
            ``False``.
        env (Mapping[str, str], optional): the environment to read. Defaults to ``None``
            (``os.environ``).

    Returns:
        A single-process context when ``WORLD_SIZE`` is unset or 1 (no process group),
        otherwise a context whose process group is initialised.

    Examples:
        >>> init_distributed("cpu", env={"WORLD_SIZE": "1", "RANK": "0"}).is_distributed
        False
        >>> init_distributed(env={"WORLD_SIZE": "2"})  # doctest: +SKIP
    """
    env = os.environ if env is None else env
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext(device=torch.device(device), seed=seed)
    missing = [name for name in ("RANK", "LOCAL_RANK") if name not in env]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} is not set: launch with torchrun "
            "(python -m torch.distributed.run), which sets RANK, LOCAL_RANK, MASTER_ADDR and "
            "MASTER_PORT."
        )
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed.")
    rank, local_rank = int(env["RANK"]), int(env["LOCAL_RANK"])
    rank_device = resolve_device(device, local_rank, world_size)
    backend = choose_backend(rank_device, backend)
    if rank_device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this machine has {torch.cuda.device_count()} "
                "visible GPUs: expected --nproc-per-node <= the number of GPUs."
            )
        torch.cuda.set_device(rank_device)
    dist.init_process_group(
        backend,
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
        device_id=rank_device if rank_device.type == "cuda" else None,
    )
    return DistributedContext(
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        device=rank_device,
        seed=seed,
        find_unused_parameters=find_unused_parameters,
        sync_batchnorm=sync_batchnorm,
    )


@contextmanager
def distributed_session(
    device: str | torch.device = "cpu", **kwargs: Any
) -> Iterator[DistributedContext]:
    """:func:`init_distributed` for the duration of a ``with`` block, then clean up.

    Args:
        device (str or torch.device, optional): as in :func:`init_distributed`. Defaults to
            ``"cpu"``.

    Keyword Args:
        **kwargs: the keyword arguments of :func:`init_distributed`.

    Examples:

        >>> with distributed_session("cpu", env={}) as context:
        ...     context.rank
        0
    """
    context = init_distributed(device, **kwargs)
    try:
        yield context
    finally:
        context.close()
