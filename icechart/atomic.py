"""Atomic file output: write under a temporary name in the destination directory, then rename.

Every file icechart produces goes through :func:`atomic_path`, so a downstream system never
sees a half-written product. Temporary names are ``.tmp-{pid}-{stem}-{random}{suffix}``: the
pid makes them recognisably ours and tells a later run whether their writer is still alive
(:func:`remove_stale_temporaries` removes those of dead processes). Live ones are registered so
a signal handler can remove them (:func:`remove_temporaries`).

Inside :func:`confined` (the batch runner wraps every run in it) a destination whose directory
does not resolve to the confining directory is refused (73) before anything is created: an id
with ``..`` or ``/`` in it can never write outside OUT.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icechart.errors import OutputError, OutputIOError

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
_TMP_RE = re.compile(re.escape(TMP_PREFIX) + r"(\d+)-")
_LIVE: set[Path] = set()
_ROOTS: list[Path] = []

IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS)
"""errnos that are I/O faults (74) rather than "cannot create" (73)."""


def remove_temporaries() -> None:
    """Remove every temporary file still open in this process (signal handlers call this)."""
    for p in list(_LIVE):
        try:
            if p.is_dir() and not p.is_symlink():
                for q in p.iterdir():
                    q.unlink(missing_ok=True)
                p.rmdir()
            else:
                p.unlink(missing_ok=True)
        except OSError:
            pass
        _LIVE.discard(p)


def register_temporary(path: Path) -> None:
    """Have :func:`remove_temporaries` remove ``path`` (a file or a flat directory) too."""
    _LIVE.add(Path(path))


def forget_temporary(path: Path) -> None:
    _LIVE.discard(Path(path))


def temp_prefix(stem: str = "") -> str:
    """The prefix of this process's temporary names: ``.tmp-{pid}-{stem}-``."""
    return f"{TMP_PREFIX}{os.getpid()}-{stem}-" if stem else f"{TMP_PREFIX}{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(directory: str | Path) -> list[str]:
    """Remove ``.tmp-{pid}-*`` files and directories in ``directory`` whose process is gone
    (left by ``kill -9``, a crash or a power cut). Returns the names removed. Temporaries of
    live processes, and names not of our pattern, are left alone."""
    d = Path(directory)
    removed: list[str] = []
    try:
        entries = list(d.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP_RE.match(p.name)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                for q in p.iterdir():
                    q.unlink(missing_ok=True)
                p.rmdir()
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
        except OSError as exc:
            logger.warning("%s: cannot remove a stale temporary file (%s)", p, exc.strerror or exc)
    if removed:
        logger.info("%s: removed %d temporary file(s) of runs that died", d, len(removed))
    return removed


def os_error(exc: OSError, path: Path | str) -> OSError | Exception:
    """Translate an OSError on an output path into the contract's exception (73 or 74)."""
    if exc.errno in IO_ERRNOS:
        return OutputIOError(f"{path}: I/O error while writing ({os.strerror(exc.errno or 0)})")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def confined(root: str | Path) -> Iterator[Path]:
    """Within the block, :func:`atomic_path` refuses destinations outside ``root`` (73)."""
    r = Path(root).resolve()
    _ROOTS.append(r)
    try:
        yield r
    finally:
        _ROOTS.remove(r)


def check_inside(dest: str | Path, root: str | Path | None = None) -> Path:
    """``dest`` itself when its directory resolves to ``root`` (default: the innermost
    :func:`confined` root; no check outside one), else :class:`OutputError` (73). The file name
    must be a plain name: no separator, not ``.``/``..``, no control character."""
    dest = Path(dest)
    roots = [Path(root).resolve()] if root is not None else _ROOTS[-1:]
    if not roots:
        return dest
    name = dest.name
    if name in ("", ".", "..") or any(ord(ch) < 32 for ch in str(dest)):
        raise OutputError(f"{dest!r}: refusing an output name with control characters or no name")
    if dest.parent.resolve() != roots[0]:
        raise OutputError(f"{dest}: refusing to write outside the output directory {roots[0]}")
    return dest


@contextmanager
def atomic_path(dest: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    On any exception the temporary file is removed and ``dest`` is untouched. OSErrors become
    :class:`OutputError` (73) or, for a full disk and other I/O failures, :class:`OutputIOError`
    (74). Inside :func:`confined`, a ``dest`` outside the root is refused first (73).
    """
    dest = check_inside(Path(dest))
    sfx = suffix if suffix is not None else "".join(dest.suffixes[-1:])
    try:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(dest.stem[:80]), suffix=sfx, dir=dest.parent)
        os.close(fd)
    except OSError as exc:
        raise os_error(exc, dest) from exc
    tmp = Path(name)
    _LIVE.add(tmp)
    try:
        yield tmp
        # mkstemp creates 0600; products are for other users and systems: honour the umask.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, dest) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _LIVE.discard(tmp)
