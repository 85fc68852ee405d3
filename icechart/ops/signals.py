"""SIGINT/SIGTERM/SIGHUP: remove temporary files and exit 130/143/129 cleanly.

The handler first deletes every temporary file registered by :mod:`icechart.atomic` (so no
half-written product survives even if unwinding is cut short), then raises
:class:`SignalExit`, a :class:`SystemExit`: ``except Exception`` blocks do not swallow it,
``with`` blocks (locks, open files, :func:`~icechart.atomic.atomic_path`) unwind, and the
process exits with 128 + the signal number. A second signal while unwinding exits at once.

SIGHUP (the terminal or the ssh session went away) is handled like SIGTERM and exits 129.

The command line installs the handler process-wide with :func:`install` as its very first
step, before click, numpy, xarray or torch are imported (``icechart.cli.main``), so a signal
during a slow import is neither lost nor a traceback. Because a signal raised inside some C
extension's import can be turned into an ImportError that a caller swallows, the fact that a
signal arrived is also kept (:func:`received`): :func:`icechart.cli.main.main` then exits with
the signal's code whatever happened afterwards, never 0, and leaves through ``os._exit`` so
that no half-imported native library runs its finalisers (a C++ ``terminate`` would make it
134).

Python cannot raise out of some callbacks it runs for the interpreter (weakref callbacks, ``__del__``,
garbage-collector hooks): an exception there is "ignored" and printed with a traceback. The
handler's :class:`SignalExit` can land in one of those, so :func:`install` also sets an
unraisable hook that keeps such a SignalExit silent and delivers the signal again a moment later,
when ordinary code runs, where it stops the command as usual.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from icechart.atomic import remove_temporaries

logger = logging.getLogger(__name__)

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
EXIT_CODES = {int(s): 128 + int(s) for s in HANDLED}
"""130 SIGINT, 143 SIGTERM, 129 SIGHUP."""


class SignalExit(SystemExit):
    """Raised by the handler; ``code`` is 128 + the signal number (130 SIGINT, 143 SIGTERM,
    129 SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def signame(self) -> str:
        return signal.Signals(self.signum).name


_state: dict[str, Any] = {"fired": False, "signum": None, "process": False, "announced": False}


def received() -> int | None:
    """The number of the first handled signal this process received, or None."""
    return _state["signum"]


def _handler(signum: int, _frame: FrameType | None) -> None:
    remove_temporaries()
    if _state["fired"]:  # second signal: stop unwinding politely, just go
        os._exit(128 + (_state["signum"] or signum))
    _state["fired"] = True
    _state["signum"] = signum
    if not _state["announced"]:
        _state["announced"] = True
        name = signal.Signals(signum).name
        try:
            sys.stderr.write(f"icechart: {name} received; temporary files removed, stopping\n")
            sys.stderr.flush()
        except Exception:  # stderr may be closed under cron
            pass
    raise SignalExit(signum)


REDELIVERY_DELAY_S = 0.05
"""How long after a SignalExit was swallowed in an interpreter callback the signal comes again."""


def _redeliver(signum: int) -> None:
    time.sleep(REDELIVERY_DELAY_S)  # the callback and the hook have returned by then
    os.kill(os.getpid(), signum)


def _unraisable(hook_args: Any, _previous: Any = sys.unraisablehook) -> None:
    exc = hook_args.exc_value
    if not isinstance(exc, SignalExit):
        _previous(hook_args)
        return
    # Raised inside a callback the interpreter cannot propagate from: not the second signal, so
    # clear "fired" and send the same signal again from a helper thread, to land in ordinary code.
    _state["fired"] = False
    threading.Thread(target=_redeliver, args=(exc.signum,), daemon=True).start()


def install() -> None:
    """Install the handler process-wide (main thread only; elsewhere a no-op). For the command
    line's entry point; library code uses :func:`handle_signals`."""
    if threading.current_thread() is not threading.main_thread():
        return
    _state["process"] = True
    sys.unraisablehook = _unraisable
    for sig in HANDLED:
        signal.signal(sig, _handler)


def _record(signum: int, _frame: FrameType | None) -> None:
    if _state["signum"] is None:
        _state["signum"] = signum


def quiet() -> None:
    """From now on a handled signal is only recorded (:func:`received`), never raised: for the
    last steps of the command line, after the work is done, where an exception would only
    print a traceback from interpreter finalisation and leave the exit status 0."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in HANDLED:
        signal.signal(sig, _record)


@contextmanager
def handle_signals() -> Iterator[None]:
    """Install the SIGINT/SIGTERM/SIGHUP handler for the ``with`` block (main thread only).

    Outside the main thread (where Python cannot install handlers) this is a no-op. A signal
    that already arrived (e.g. during an import, then swallowed) stops the block at once.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}
    if _state["process"]:
        check()  # the command line's handler caught one during the imports
    else:  # library use: each block starts afresh
        _state.update(fired=False, signum=None, announced=False)
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


def check() -> None:
    """Raise :class:`SignalExit` when a signal arrived and was swallowed on the way (call
    between scenes)."""
    if _state["signum"] is not None:
        remove_temporaries()
        raise SignalExit(_state["signum"])
