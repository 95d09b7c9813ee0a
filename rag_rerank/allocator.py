"""Let the C allocator keep freed memory, so large tensors reuse warm pages.

A forward pass allocates and frees many multi-megabyte tensors. glibc serves those with
fresh ``mmap`` pages and trims freed heap back to the OS, so every batch pays page faults
again: on the 2-core test machine that cost the int8 path ~25% of its time. Raising the
mmap and trim thresholds keeps the pages in the process (the effect PyTorch's CPU tuning
guide gets from jemalloc or tcmalloc). It is process-wide, so the library never does it
on its own: call it in a process you own; ``rag-rerank serve`` does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's ceiling on 64-bit systems
TRIM_THRESHOLD = 2**30


def tune_allocator() -> bool:
    """Raise glibc's mmap/trim thresholds; True if applied (False on other C libraries)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        log.info("allocator tuning skipped: no glibc mallopt")
        return False
    applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    log.info("allocator tuning %s", "applied" if applied else "refused by mallopt")
    return applied
