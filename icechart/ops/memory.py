"""Process-wide memory settings for long batch commands (``icechart predict``).

glibc's allocator raises its mmap threshold every time a large block is freed, after which
large arrays (row blocks, feature windows: a few MB each) come from the heap, and memory freed
there is rarely returned to the system; each thread also gets its own heap arena. A prediction
therefore kept ~0.3 GiB of freed temporaries. A fixed 1 MiB threshold makes every large array
its own mapping, returned when freed, and two arenas bound the per-thread heaps; the cost is a
page fault per fresh page of a large array (milliseconds per block). On another C library this
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20
ARENA_MAX = 2


def return_freed_memory() -> bool:
    """Apply the settings above (glibc ``mallopt``); True when they took effect."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_ARENA_MAX, ARENA_MAX))
    logger.debug("mallopt mmap threshold %d, arenas %d: %s", MMAP_THRESHOLD, ARENA_MAX, ok)
    return ok
