"""Exceptions that carry their exit code (contract.md, sysexits style).

Library code raises these; only :mod:`icechart.cli.main` turns them into process exits.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text, at most ``limit`` characters (its type name when
    empty), for one-line error messages that quote a library's error."""
    return (str(exc).splitlines() or [type(exc).__name__])[0][:limit] or type(exc).__name__


def is_out_of_memory(exc: BaseException) -> bool:
    """Host or device memory exhausted: MemoryError, torch's ``OutOfMemoryError`` (CUDA), or a
    RuntimeError from a CUDA library that says "out of memory" (cuDNN, cuBLAS allocations)."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class IcechartError(Exception):
    """Root of every error icechart reports to a user. ``exit_code`` is the sysexits code."""

    exit_code: int = 70

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class BadDataError(IcechartError):
    """Input data is malformed or unusable (EX_DATAERR)."""

    exit_code = 65


class InputMissingError(IcechartError):
    """An input file does not exist or cannot be opened (EX_NOINPUT)."""

    exit_code = 66


class ModelError(IcechartError):
    """The model is missing, corrupt or incompatible (EX_UNAVAILABLE)."""

    exit_code = 69


class DeviceError(ModelError):
    """The requested device (``--device cuda``) is not available: 69 in every command."""


class InternalError(IcechartError):
    """A bug: something that should not happen (EX_SOFTWARE)."""

    exit_code = 70


class OutputError(IcechartError):
    """An output cannot be created, or exists and ``--overwrite`` was not given (EX_CANTCREAT)."""

    exit_code = 73


class OutputIOError(IcechartError):
    """An I/O error while writing, e.g. a full disk (EX_IOERR)."""

    exit_code = 74


class TryAgainError(IcechartError):
    """A transient condition: lock busy, GPU out of memory (EX_TEMPFAIL)."""

    exit_code = 75


class ConfigError(IcechartError):
    """Bad configuration: unknown key, wrong type, incompatible checkpoint (EX_CONFIG)."""

    exit_code = 78


class DataWarning(UserWarning):
    """Suspicious but usable data (e.g. most of the SAR invalid)."""


def native_stderr(logger_name: str = "icechart.native"):  # type: ignore[no-untyped-def]
    """Context manager: what C libraries print on file descriptor 2 inside the block (libtiff's
    "_tiffSeekProc: No space left on device.", which bypasses GDAL's error handler) becomes
    DEBUG log records instead of raw lines between icechart's own; icechart's own lines written
    meanwhile are passed through. The capture lives in memory (``memfd``), never on the disk
    that may be full. A no-op where ``os.memfd_create`` is missing."""
    import contextlib
    import logging
    import os
    import sys

    @contextlib.contextmanager
    def _capture():  # type: ignore[no-untyped-def]
        if not hasattr(os, "memfd_create"):
            yield
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            mem = os.memfd_create("icechart-stderr")
        except (OSError, ValueError, AttributeError):
            yield
            return
        os.dup2(mem, 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            os.lseek(mem, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(mem, 1 << 16):
                chunks.append(chunk)
            os.close(mem)
            log = logging.getLogger(logger_name)
            for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
                if line.startswith("icechart: "):
                    try:
                        sys.stderr.write(line + "\n")
                    except (OSError, ValueError):
                        pass
                elif line.strip():
                    log.debug("native library: %s", line)

    return _capture()
