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
_DEST: dict[Path, Path] = {}
_ROOTS: list[Path] = []

FULL_BYTES = 16 * 2**20
"""A filesystem with less than this free is full for :func:`fault_error`: a writer library that
fails there (netCDF's "HDF error", GDAL's write errors) ran out of space."""

IO_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS)
"""errnos that are I/O faults (74) rather than "cannot create" (73)."""


def remove_temporaries() -> None:
    """Remove every temporary file still open in this process (signal handlers call this)."""
    for p in list(_LIVE):
        try:
            _remove(p)
        except OSError:
            pass
        _LIVE.discard(p)


def _remove(p: Path) -> None:
    """Remove a temporary file, or a flat temporary directory and its files."""
    if p.is_dir() and not p.is_symlink():
        for q in p.iterdir():
            q.unlink(missing_ok=True)
        p.rmdir()
    else:
        p.unlink(missing_ok=True)


def register_temporary(path: Path, dest: Path | None = None) -> None:
    """Have :func:`remove_temporaries` remove ``path`` (a file or a flat directory) too;
    ``dest`` is the product it becomes (named in a disk-full error)."""
    _LIVE.add(Path(path))
    if dest is not None:
        _DEST[Path(path)] = Path(dest)


def forget_temporary(path: Path) -> None:
    _LIVE.discard(Path(path))
    _DEST.pop(Path(path), None)


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
            _remove(p)
            removed.append(p.name)
        except OSError as exc:
            logger.warning("%s: cannot remove a stale temporary file (%s)", p, exc.strerror or exc)
    if removed:
        logger.info("%s: removed %d temporary file(s) of runs that died", d, len(removed))
    return removed


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _being_written(directory: Path) -> Path | None:
    """The destination of the temporary file in ``directory`` written last (by mtime): the
    one whose writer failed when several products are open at once."""
    best: tuple[int, Path] | None = None
    for tmp in list(_LIVE):
        try:
            if tmp.parent.resolve() != directory.resolve():
                continue
            if tmp.is_dir():  # its own mtime changes when its writer creates or removes files
                m = max([tmp.stat().st_mtime_ns] + [q.stat().st_mtime_ns for q in tmp.iterdir()])
                if best is None or m > best[0]:
                    best = (m, _DEST.get(tmp, tmp))
            else:
                m = tmp.stat().st_mtime_ns
                if best is None or m > best[0]:
                    best = (m, _DEST.get(tmp, tmp))
        except OSError:
            continue
    return best[1] if best else None


def fault_error(exc: BaseException, dest: str | Path) -> Exception | None:
    """An :class:`OutputIOError` (74) for a writer library's error (not an OSError: netCDF4's
    "HDF error", rasterio/GDAL and pyogrio write errors) raised while the filesystem of
    ``dest`` is full (:data:`FULL_BYTES`), naming the product being written; None otherwise."""
    if isinstance(exc, OSError):
        return os_error(exc, dest) if exc.errno in IO_ERRNOS else None
    if isinstance(exc, (MemoryError, SystemExit, KeyboardInterrupt)) or type(exc).__module__.startswith("icechart"):
        return None
    d = Path(dest).parent
    free = _free_bytes(d)
    if free is None or free >= FULL_BYTES:
        return None
    target = _being_written(d) or Path(dest)
    from icechart.errors import first_line

    return OutputIOError(
        f"{target}: I/O error while writing (disk full: {free // 1024} KiB free; {first_line(exc, 120)})"
    )


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
    _DEST[tmp] = dest
    try:
        yield tmp
        # mkstemp creates 0600; products are for other users and systems: honour the umask.
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise os_error(exc, dest) from exc
    except Exception as exc:
        fault = fault_error(exc, dest)  # before the temporaries go: they filled the disk
        tmp.unlink(missing_ok=True)
        if fault is not None:
            raise fault from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        _LIVE.discard(tmp)
        _DEST.pop(tmp, None)
