"""SIGINT/SIGTERM in the middle of writing: no partial product, exit 130/143, rerun completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from icechart.atomic import TMP_PREFIX
from icechart.ops.signals import SignalExit, handle_signals
from icechart.synth import write_scenes

# A real batch run in a subprocess; its per-scene function stalls inside the atomic write of
# its second file (after the first is complete) until signalled.
RUNNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from icechart.atomic import atomic_path
    from icechart.io.scene import open_scene
    from icechart.ops.batch import run_batch
    from icechart.ops.signals import handle_signals

    scene, out, ready, stall = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == "1"

    def process(path):
        sc = open_scene(path)
        files = []
        for i, name in enumerate(("a.nc", "b.png")):
            dest = out / f"{sc.scene_id}_m_{name}"
            with atomic_path(dest) as tmp:
                tmp.write_bytes(b"x" * 100)
                if stall and i == 1:
                    ready.write_text("writing")
                    time.sleep(60)
            files.append(dest)
        return files

    with handle_signals():
        res = run_batch([scene], process, outdir=out, model_id="m", model_sha256=None,
                        options={}, device="cpu")
    sys.exit(res.exit_code)
    """
)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sig")
    return write_scenes(d, n=1, size=(40, 40), seed=5)[0]


def _start(scene: Path, out: Path, ready: Path, stall: bool) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(scene), str(out), str(ready), "1" if stall else "0"],
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    for _ in range(1200):
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("runner never reached the write")


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)])
def test_signal_mid_write_leaves_nothing_partial(scene, tmp_path, sig, code):
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = _start(scene, out, ready, stall=True)
    _wait_for(ready, proc)
    assert any(p.name.startswith(TMP_PREFIX) for p in out.iterdir())  # really mid-write
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert f"{signal.Signals(sig).name} received" in err
    names = sorted(p.name for p in out.iterdir())
    assert not any(n.startswith(TMP_PREFIX) for n in names)
    assert not any(n.endswith(".manifest.json") for n in names)  # the set is not complete
    assert names == []  # the attempt's finished first file is removed too: nothing partial
    # The rerun completes it.
    proc = _start(scene, out, ready, stall=False)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    manifests = list(out.glob("*.manifest.json"))
    assert len(manifests) == 1
    assert [f["name"] for f in json.loads(manifests[0].read_text())["files"]] == sorted(
        p.name for p in out.iterdir() if not p.name.endswith(".json")
    )


def test_handler_is_restored_and_raises_systemexit():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SignalExit) as ei:
        with handle_signals():
            signal.raise_signal(signal.SIGTERM)
    assert ei.value.code == 143 and ei.value.signame == "SIGTERM"
    assert isinstance(ei.value, SystemExit)
    assert signal.getsignal(signal.SIGTERM) is before


def test_signal_landing_in_an_interpreter_callback_still_stops_the_command_silently():
    """A weakref callback (like __del__) cannot raise: the SignalExit is kept quiet and the signal
    comes again in ordinary code, where it stops the program with its code."""
    script = textwrap.dedent(
        """
        import signal, sys, time, weakref
        from icechart.ops import signals
        signals.install()
        class Thing:
            pass
        thing = Thing()
        def callback(_ref):
            signal.raise_signal(signal.SIGTERM)  # handled inside the callback
            for _ in range(10000):
                pass
        ref = weakref.ref(thing, callback)
        try:
            del thing
            for _ in range(300):
                time.sleep(0.01)
        except SystemExit as exc:
            print("stopped", exc.code)
            sys.exit(0)
        print("not stopped")
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["stopped", "143"], (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    assert r.stderr.count("SIGTERM received") == 1, r.stderr
