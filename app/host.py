"""Process-wide host settings (no torch import)."""

from __future__ import annotations

import ctypes


def keep_freed_host_memory() -> bool:
    """Make glibc keep freed blocks of up to 32 MB in the process (returns whether it could).

    By default it hands a freed block of a few MB back to the kernel and maps it again at the
    next allocation, and every page of it faults in anew. The CPU twins allocate such blocks
    by the dozen each step (the reference rasterizer's per-batch tensors): on the CPU demo that
    was 26 s of system time in a 91 s run. The cost is that the process keeps its peak heap.
    glibc only (elsewhere nothing changes). Set by `splatlab` for every command (CPU renders
    for `render`, `eval` and the viewer gain too) and by `train` on a CPU."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library by that name (Windows: TypeError)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


__all__ = ["keep_freed_host_memory"]
