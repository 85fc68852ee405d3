"""``--lock FILE``: flock semantics, busy -> 75 at once, waiting, released when the holder dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from icechart.errors import OutputError, TryAgainError
from icechart.ops.lock import run_lock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from icechart.ops.lock import run_lock
    with run_lock(sys.argv[1]):
        Path(sys.argv[2]).write_text("held")
        time.sleep(float(sys.argv[3]))
        Path(sys.argv[2] + ".releasing").write_text("bye")
    """
)


def _hold(tmp_path: Path, seconds: float) -> tuple[subprocess.Popen, Path]:
    lock, ready = tmp_path / "run.lock", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(ready), str(seconds)])
    for _ in range(600):
        if ready.exists():
            return proc, lock
        if proc.poll() is not None:
            raise AssertionError("lock holder died")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("lock holder did not start")


def test_lock_is_exclusive_in_process(tmp_path):
    lock = tmp_path / "a.lock"
    with run_lock(lock):
        with pytest.raises(TryAgainError) as ei:
            with run_lock(lock):
                pass
        assert ei.value.exit_code == 75
        assert str(lock) in ei.value.message and "--lock-wait" in ei.value.message
    with run_lock(lock):  # released on exit
        pass


def test_second_process_fails_at_once_while_held(tmp_path):
    proc, lock = _hold(tmp_path, 60)
    try:
        with pytest.raises(TryAgainError) as ei:
            with run_lock(lock):
                pass
        assert f"pid {proc.pid}" in ei.value.message
        assert proc.poll() is None  # we did not wait for the holder to finish
    finally:
        proc.kill()
        proc.wait()


def test_lock_released_when_holder_is_killed(tmp_path):
    proc, lock = _hold(tmp_path, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock.exists()  # a stale file does not matter: the flock died with the process
    with run_lock(lock):
        pass


def test_lock_wait_gets_the_lock_when_freed(tmp_path):
    proc, lock = _hold(tmp_path, 0.5)
    try:
        with run_lock(lock, wait=60):
            assert (tmp_path / "ready.releasing").exists()  # the holder had to let go first
    finally:
        proc.kill()
        proc.wait()


def test_lock_wait_times_out_with_75(tmp_path):
    proc, lock = _hold(tmp_path, 60)
    try:
        with pytest.raises(TryAgainError) as ei:
            with run_lock(lock, wait=0.2):
                pass
        assert "after waiting 0.2 s" in ei.value.message
    finally:
        proc.kill()
        proc.wait()


def test_lock_file_that_cannot_be_created(tmp_path):
    with pytest.raises(OutputError) as ei:
        with run_lock(tmp_path / "no" / "such" / "dir.lock"):
            pass
    assert ei.value.exit_code == 73 and "cannot create lock file" in ei.value.message
