"""Small helpers on input path lists shared by the commands that take files and directories."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


def unique_paths(paths: Iterable[Path]) -> list[Path]:
    """``paths`` in order with later duplicates dropped: the same file named twice (a file and
    its directory, a relative and an absolute path) counts once."""
    seen: set[Path] = set()
    out: list[Path] = []
    for p in paths:
        try:
            key = p.resolve()
        except (OSError, RuntimeError):  # a symlink loop: it fails as its own input later
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
