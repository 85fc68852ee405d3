"""The one owner of torch's CPU thread setting on the prediction and validation paths.

``torch.set_num_threads`` acts on the calling thread (its OpenMP and MKL thread counts) and also
stores a process-wide value that a thread which never set its own picks up the first time it runs
a parallel op. So code that wants one intra-op thread sets it *on the thread that does the work*,
for the duration only, and never relies on what another thread set: the forward pass's tile
workers and the row-block decision (on a worker beside the sinks) can then run at the same time
without changing each other's setting. Whoever changed the setting restores it, which puts the
process-wide value back too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread(device: torch.device | None = None) -> Iterator[None]:
    """Torch ops of the calling thread run on one intra-op thread inside the block (a no-op for
    a device other than the CPU). Nested blocks and other threads' blocks keep their own."""
    if device is not None and device.type != "cpu":
        yield
        return
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _one_thread_worker() -> None:
    torch.set_num_threads(1)


@contextmanager
def one_thread_workers() -> Iterator[Callable[[], None]]:
    """Gives a thread pool's initializer with which each worker runs its torch ops on one
    intra-op thread; the caller's own setting is left alone, and the process-wide value the
    workers stored is put back when the block ends (after the pool's shutdown)."""
    n = torch.get_num_threads()
    try:
        yield _one_thread_worker
    finally:
        torch.set_num_threads(n)
