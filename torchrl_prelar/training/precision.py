"""Choosing the compute precision: bf16 autocast only where the hardware has native bf16."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True if this CPU computes bf16 natively (AVX-512 BF16 or AMX), not by emulation.

    ``torch.backends.cpu.get_cpu_capability()`` tells AVX2 from AVX-512 machines; the
    ``avx512_bf16`` / ``amx_bf16`` flags tell which AVX-512 machines have bf16 units. On an
    AVX2-only CPU bf16 matrix products are emulated, about 45x slower than fp32
    (``docs/guide.md``).

    Args:
        cpuinfo (str, optional): the content of ``/proc/cpuinfo``. Defaults to ``None``
            (read from that file).

    Examples:
        >>> isinstance(cpu_has_native_bf16(), bool)
        True
    """
    if "AVX512" not in torch.backends.cpu.get_cpu_capability():
        return False
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: torch.device | str) -> torch.dtype | None:
    """Map a precision name to the autocast dtype to use on ``device`` (None = fp32).

    ``"auto"`` picks bf16 on CUDA devices that support it and on CPUs with native bf16,
    fp32 otherwise.

    Args:
        precision (str): ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        device (torch.device or str): the device the model runs on.

    Returns:
        the autocast dtype, or ``None`` for fp32.

    Raises:
        ValueError: if ``precision`` is unknown, or ``"fp16"`` on a device other than CUDA.

    Examples:
        >>> resolve_precision("fp32", "cpu") is None
        True
        >>> resolve_precision("bf16", "cpu")
        torch.bfloat16
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ValueError("precision='fp16' is for CUDA devices; use 'bf16' or 'auto' on CPU.")
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(
    device: torch.device | str, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op for fp32 (``dtype=None``).

    Args:
        device (torch.device or str): the device whose type autocast covers.
        dtype (torch.dtype, optional): the autocast dtype; ``None`` runs in fp32.

    Examples:

        >>> with autocast("cpu", torch.bfloat16):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
