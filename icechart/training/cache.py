"""The training preprocessing cache: entry keys, and listing and pruning (``icechart cache``).

An entry is ``{key}.x.npy`` (unnormalised downscaled features), ``{key}.y.npy`` (downscaled
labels), optionally ``{key}.full.npy`` (full-resolution labels, validation scenes) and
``{key}.json`` (what the entry was built from), all in one flat directory.

**The key** is the sha256 of everything that changes a stack: the scene file (resolved path,
size, modification time), the feature settings (channels, factor, downscale and label methods,
interpolation, ``sar_fill``), the cache layout version and :func:`feature_code_version`, a hash
of the source of the modules that compute the stacks (:mod:`icechart.features`, the reader
:mod:`icechart.io.scene` with its validity rules, :mod:`icechart.classes`). A fix to any of them
gives new keys, so stale stacks are never reused; the old entries stay until pruned.

No torch here: ``icechart cache`` stays fast.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from icechart.errors import InputMissingError, OutputError

logger = logging.getLogger(__name__)

CACHE_VERSION = 2
"""Layout of an entry (2: the ``.json`` records the key fields and the code version)."""
CODE_MODULES = ("icechart.features", "icechart.io.scene", "icechart.classes")
"""The modules whose source decides what a cached stack holds."""
SUFFIXES = (".x.npy", ".y.npy", ".full.npy", ".json")


@lru_cache(maxsize=1)
def feature_code_version() -> str:
    """sha256 (16 hex digits) of the source of :data:`CODE_MODULES`."""
    import importlib.util

    h = hashlib.sha256()
    for name in CODE_MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None:  # frozen/zipped: fall back to the package version
            from icechart import __version__

            h.update(f"{name}={__version__}".encode())
            continue
        h.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def key_fields(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What an entry of ``path`` depends on (``settings``: the feature settings of a run)."""
    st = path.stat()
    return {
        "v": CACHE_VERSION,
        "code": feature_code_version(),
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime": st.st_mtime_ns,
        **settings,
    }


def entry_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def touch(info_file: Path) -> None:
    """Record a use of an entry (its ``.json`` modification time is the last use)."""
    try:
        os.utime(info_file)
    except OSError:  # a read-only cache still serves
        pass


# -- listing and pruning ---------------------------------------------------------------------
@dataclass
class Entry:
    key: str
    scene_id: str | None
    source: str | None
    bytes: int
    last_used: float
    stale: str | None
    """Why the entry can never be used again (None: it may be)."""
    files: list[Path]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "scene_id": self.scene_id,
            "source": self.source,
            "bytes": self.bytes,
            "last_used": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used)),
            "stale": self.stale,
        }


def _why_stale(info: dict[str, Any] | None) -> str | None:
    if info is None:
        return "unreadable or missing .json"
    fields = info.get("key_fields")
    if not isinstance(fields, dict) or fields.get("v") != CACHE_VERSION:
        return "old cache layout"
    if fields.get("code") != feature_code_version():
        return "built by other feature code"
    src = Path(str(fields.get("path", "")))
    try:
        st = src.stat()
    except OSError:
        return "source scene gone"
    if st.st_size != fields.get("size") or st.st_mtime_ns != fields.get("mtime"):
        return "source scene changed"
    return None


def list_entries(cache: str | Path) -> list[Entry]:
    """Every entry of a cache directory, sorted by last use (oldest first).

    Raises
    ------
    InputMissingError
        ``cache`` is not a directory (66).
    """
    d = Path(cache)
    if not d.is_dir():
        raise InputMissingError(f"{d}: no such cache directory")
    groups: dict[str, list[Path]] = {}
    for p in d.iterdir():
        if p.name.startswith(".") or not p.is_file():
            continue
        for sfx in SUFFIXES:
            if p.name.endswith(sfx):
                groups.setdefault(p.name[: -len(sfx)], []).append(p)
                break
    out: list[Entry] = []
    for key, files in groups.items():
        fj = d / f"{key}.json"
        info: dict[str, Any] | None
        try:
            info = json.loads(fj.read_text(encoding="utf-8"))
            if not isinstance(info, dict):
                info = None
        except (OSError, ValueError):
            info = None
        stat = [f.stat() for f in files]
        out.append(Entry(
            key=key,
            scene_id=(info or {}).get("scene_id"),
            source=(info or {}).get("path"),
            bytes=sum(s.st_size for s in stat),
            last_used=fj.stat().st_mtime if fj.exists() else max(s.st_mtime for s in stat),
            stale=_why_stale(info),
            files=sorted(files),
        ))  # fmt: skip
    return sorted(out, key=lambda e: (e.last_used, e.key))


def prune(
    cache: str | Path,
    *,
    older_than_days: float | None = None,
    max_bytes: int | None = None,
    everything: bool = False,
    dry_run: bool = False,
) -> list[Entry]:
    """Remove entries; returns those removed (or that would be, with ``dry_run``).

    Always the stale ones (they can never be used again); with ``older_than_days`` also those
    unused for that long; with ``max_bytes`` also the least recently used until the rest fits;
    with ``everything``, all.

    Raises
    ------
    InputMissingError
        No such cache directory (66).
    OutputError
        A file cannot be removed (73).
    """
    entries = list_entries(cache)
    now = time.time()
    drop = [
        e for e in entries
        if everything or e.stale or (older_than_days is not None and now - e.last_used > older_than_days * 86400)
    ]  # fmt: skip
    if max_bytes is not None:
        keep = [e for e in entries if e not in drop]
        total = sum(e.bytes for e in keep)
        for e in keep:  # oldest first
            if total <= max_bytes:
                break
            drop.append(e)
            total -= e.bytes
    if not dry_run:
        for e in drop:
            for f in e.files:
                try:
                    f.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise OutputError(f"{f}: cannot remove cache file ({exc.strerror})") from exc
    return drop
