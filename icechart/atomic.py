"""Atomic file output: write under a temporary name in the destination directory, then rename.

Every file icechart produces goes through :func:`atomic_path`, so a downstream system never
sees a half-written product. Temporary names start with ``.tmp-`` and are registered so a
signal handler can remove them (:func:`remove_temporaries`).
"""

from __future__ import annotations

import errno
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icechart.errors import OutputError, OutputIOError

logger = logging.getLogger(__name__)

TMP_PREFIX = ".tmp-"
_LIVE: set[Path] = set()


def remove_temporaries() -> None:
    """Remove every temporary file still open in this process (signal handlers call this)."""
    for p in list(_LIVE):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass
        _LIVE.discard(p)


def os_error(exc: OSError, path: Path | str) -> OSError | Exception:
    """Translate an OSError on an output path into the contract's exception (73 or 74)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG):
        return OutputIOError(f"{path}: I/O error while writing ({os.strerror(exc.errno or 0)})")
    return OutputError(f"{path}: cannot write ({exc.strerror or exc})")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: str | Path, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    On any exception the temporary file is removed and ``dest`` is untouched. OSErrors become
    :class:`OutputError` (73) or, for a full disk and other I/O failures, :class:`OutputIOError`
    (74).
    """
    dest = Path(dest)
    sfx = suffix if suffix is not None else "".join(dest.suffixes[-1:])
    try:
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX + dest.stem + "-", suffix=sfx, dir=dest.parent)
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
