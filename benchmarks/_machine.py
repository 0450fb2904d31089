"""What every benchmark reports about the machine it ran on, and its GEMM peak.

Shared by the scripts in ``benchmarks/`` (imported as a sibling module when a script runs
as ``python benchmarks/<script>.py``).
"""

from __future__ import annotations

import platform
import resource
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from torchrl_prelar.training.precision import cpu_has_native_bf16


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (the machine type elsewhere)."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU (or GPU) model, torch version, threads and the CPU's vector capability."""
    info = {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_native_bf16(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU), so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory count on a GPU (the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process: the GPU allocator's peak, or the CPU's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gemm_peak(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 10):
    """FLOP/s of a ``size``-square matmul in ``dtype`` (best of ``repeats``).

    ``size`` defaults to 2048 on a CPU and 8192 on a GPU (a smaller product there measures
    the launch, not the matrix units).
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def print_table(result: dict) -> None:
    """Print ``result`` as aligned ``key  value`` lines."""
    width = max(map(len, result))
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")


class FlopCount(TorchDispatchMode):
    """Count matmul and convolution FLOPs (torch's own per-op formulas) inside a ``with``.

    ``operators`` counts every dispatched ATen operator: in eager mode on a GPU each is
    (at least) one kernel launch, so it bounds the launch overhead of the counted work.

    Unlike :class:`torch.utils.flop_counter.FlopCounterMode` it keeps no per-module
    breakdown, so it works with modules that cannot be hashed as weak-reference keys
    (TensorDict-based TorchRL losses and environments).

    Examples:
        >>> with FlopCount() as count:
        ...     _ = torch.ones(2, 3) @ torch.ones(3, 4)
        >>> count.total, count.operators
        (48, 3)
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.operators = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.operators += 1
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out
