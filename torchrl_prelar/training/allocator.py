"""Keep freed CPU memory in the process, so that large tensors do not page-fault every time."""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters of glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Free memory at the top of the heap that glibc keeps instead of returning it (the most
#: ``mallopt`` takes, a C ``int``).
TRIM_THRESHOLD = 2**31 - 1


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and keep freed memory there for reuse.

    By default glibc maps each block above its mmap threshold (32 MiB at most) from the
    kernel and unmaps it when freed, so every new large tensor faults in and zeroes all its
    pages again. A fine-tuning update at 16 x 50 frames creates hundreds of such tensors
    (the 32 x 32 feature maps of 800 frames are 52 MB each): with the pages faulted in anew
    each time, an element-wise operation on them takes 2x as long
    (``benchmarks/finetune_loop.py``). With ``M_MMAP_MAX=0`` large blocks come from the heap,

    and with ``M_TRIM_THRESHOLD`` at its maximum the freed heap stays with the process: its
    resident memory stays near its peak between updates instead of shrinking.

    Process-wide and permanent; the same as starting Python with
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``.

    Returns:
        True if the settings were applied, False where the C library is not glibc
        (nothing changed).

    Examples:
        >>> isinstance(keep_freed_memory(), bool)
        True
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and applied
