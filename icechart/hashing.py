"""sha256 of files: the one helper for model weights, input scenes and product files.

A scene is hashed twice in a run if nothing remembers it: once for the netCDF product's
provenance attributes and once for its manifest. :func:`sha256_file` therefore keeps the last
few digests keyed by the file's identity and state (device, inode, size, modification time in
ns), all read by one ``stat`` *before* hashing; a file replaced or modified since gives another
key and is hashed again. This is the same test the rerun check uses (size and mtime first,
hash only when they changed; :mod:`icechart.ops.manifest`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

logger = logging.getLogger(__name__)

CHUNK = 1 << 20
"""Bytes per read (1 MiB); hashlib releases the GIL on large updates."""
_CACHE_SIZE = 32
_cache: OrderedDict[tuple[int, int, int, int], str] = OrderedDict()
_lock = threading.Lock()


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (remembered while the file is unchanged).

    Raises
    ------
    OSError
        The file cannot be read (callers turn this into their own error and exit code).
    """
    with open(path, "rb") as fh:
        key = _key(os.fstat(fh.fileno()))
        with _lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
        h = hashlib.sha256()
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _cache[key] = digest
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return digest
