"""SIGINT/SIGTERM: remove temporary files and exit 130/143 cleanly.

The handler first deletes every temporary file registered by :mod:`icechart.atomic` (so no
half-written product survives even if unwinding is cut short), then raises
:class:`SignalExit`, a :class:`SystemExit`: ``except Exception`` blocks do not swallow it,
``with`` blocks (locks, open files, :func:`~icechart.atomic.atomic_path`) unwind, and the
process exits with 128 + the signal number. A second signal while unwinding exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from icechart.atomic import remove_temporaries

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM)


class SignalExit(SystemExit):
    """Raised by the handler; ``code`` is 128 + the signal number (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name


_state = {"fired": False}


def _handler(signum: int, _frame: FrameType | None) -> None:
    remove_temporaries()
    if _state["fired"]:  # second signal: stop unwinding politely, just go
        os._exit(128 + signum)
    _state["fired"] = True
    name = signal.Signals(signum).name
    try:
        sys.stderr.write(f"icechart: {name} received; temporary files removed, stopping\n")
        sys.stderr.flush()
    except Exception:  # stderr may be closed under cron
        pass
    raise SignalExit(signum)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM handler for the ``with`` block (main thread only).

    Outside the main thread (where Python cannot install handlers) this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    _state["fired"] = False
    for sig in HANDLED:
        previous[sig] = signal.signal(sig, _handler)
    try:
        yield
    except SignalExit:
        remove_temporaries()
        raise
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
