"""``--lock FILE``: one run at a time, with an ``flock`` lock that dies with the process.

The lock is advisory (``fcntl.flock``) on an open file descriptor, so the kernel releases it
when the process exits for any reason (crash, ``kill -9``, reboot): a stale lock file never
blocks the next cron run (the util-linux ``flock(1)`` convention). The file itself is left in
place; removing it would let two runs lock two different inodes.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from icechart.errors import OutputError, TryAgainError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
"""How often a waiting run retries the lock."""


def _holder(fd: int) -> str:
    """The pid the current holder wrote into the lock file, for the message (best effort)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" by pid {text}" if text.isdigit() else ""


@contextmanager
def run_lock(path: str | Path, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``path`` for the duration of the ``with`` block.

    Parameters
    ----------
    path
        The lock file; created (with its directory left as is) when missing.
    wait
        Seconds to wait for a busy lock; 0 fails at once.

    Raises
    ------
    TryAgainError
        The lock is held by another process and did not come free within ``wait`` (75).
    OutputError
        The lock file cannot be created or opened (73).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutputError(f"{path}: cannot create lock file ({exc.strerror})") from exc
    try:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    hint = "" if wait > 0 else "; retry later or pass --lock-wait SECONDS"
                    waited = f" after waiting {wait:g} s" if wait > 0 else ""
                    raise TryAgainError(
                        f"{path}: lock is held{_holder(fd)} (another icechart run){waited}{hint}"
                    ) from None
                time.sleep(POLL_SECONDS)
        # Record our pid for the next run's message; the lock, not the content, is what counts.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        logger.debug("holding lock %s", path)
        yield path
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


CLAIM_PREFIX = ".claim-"


@contextmanager
def claim(directory: str | Path, name: str) -> Iterator[bool]:
    """Claim one unit of work (a scene) in ``directory`` for the ``with`` block: yields True
    when this process holds it, False when another live process does.

    The claim is an ``flock`` on ``directory/.claim-{name}``, so it dies with its process like
    :func:`run_lock`. The holder removes the file before releasing it; a process that locked a
    file which was removed meanwhile retries on the new one, so two runs never both hold one
    name. Two runs on one OUT (or shards of one run) thus share the scenes without ``--lock``.

    Raises
    ------
    OutputError
        The claim file cannot be created (73).
    """
    path = Path(directory) / f"{CLAIM_PREFIX}{name}"
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            from icechart.atomic import os_error

            raise os_error(exc, path) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file its holder had just removed: take the new one
    try:
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield True
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
