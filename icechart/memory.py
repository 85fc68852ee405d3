"""Giving freed memory back to the system between the stages of a prediction.

glibc's allocator raises its mmap threshold each time a large block is freed; afterwards large
temporaries (feature windows, row blocks: a few MB each) come from the heap, and memory freed
there stays with the process. A prediction thus carried ~0.2-0.3 GiB of freed feature
temporaries into the forward pass, its memory peak. ``malloc_trim(0)`` returns every free heap
page (all arenas) at the points where a stage's temporaries are gone; it costs milliseconds, not
the page faults of forcing every large array into its own mapping (tried: +3 s of system time
on a 5000 x 5000 scene). On another C library it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any

logger = logging.getLogger(__name__)

_libc: Any = None


def release_free_memory() -> bool:
    """``malloc_trim(0)`` (glibc); True when some memory was returned."""
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
            if _libc is not False and not hasattr(_libc, "malloc_trim"):
                _libc = False
        except OSError:  # pragma: no cover - no loadable C library
            _libc = False
    if _libc is False:
        return False
    return bool(_libc.malloc_trim(0))
