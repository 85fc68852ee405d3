"""`icechart predict` run as cron runs it: real subprocesses, locks, signals, full disks.

Each test starts ``python -m icechart predict`` on tiny synthetic scenes with a random-weights
checkpoint. Where a test must catch the command at a given moment (mid-write, holding the
lock) or fake a fault (ENOSPC), a ``sitecustomize`` module on ``PYTHONPATH`` installs a hook
chosen by ``ICECHART_TEST_HOOK``; the command itself is unchanged. The tests assert
behaviour (exit codes, messages, files), never timings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from icechart.atomic import TMP_PREFIX
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint

SHAPE = (100, 90)

HOOK = textwrap.dedent(
    '''
    """Test hooks for tests/test_predict_ops.py, chosen by ICECHART_TEST_HOOK."""
    import contextlib, errno, os, time
    from pathlib import Path

    _mode, _, _arg = os.environ.get("ICECHART_TEST_HOOK", "").partition(":")

    if _mode == "stall":
        # Stall right after a middle product was renamed into place: some products of the
        # scene are final, others still temporary. _arg is the marker file to write then.
        import icechart.atomic as A

        _orig = A.atomic_path

        @contextlib.contextmanager
        def _stalling(dest, **kw):
            with _orig(dest, **kw) as tmp:
                yield tmp
            if str(dest).endswith("_SOD.tif"):
                Path(_arg).write_text("writing")
                time.sleep(120)

        A.atomic_path = _stalling

    elif _mode == "enospc":
        # The quicklook writer hits a full disk half-way through its file.
        import icechart.products.quicklook as Q

        def _full(tmp, *a, **k):
            with open(tmp, "wb") as fh:
                fh.write(b"\\x89PNG half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

        Q.write_quicklook = _full

    elif _mode == "noread":
        # A skipped scene must not be opened, read or hashed: any of these fails the run (70).
        import icechart.hashing as H
        import icechart.io.scene as S

        def _boom(*a, **k):
            raise AssertionError("a skipped scene was read")

        S.open_scene = _boom
        S.Scene.sar = S.Scene.read = _boom
        _hash = H.sha256_file

        def _no_scene_hash(path):
            if str(path).endswith("_prep.nc"):
                raise AssertionError(f"a skipped scene was hashed: {path}")
            return _hash(path)

        H.sha256_file = _no_scene_hash
    '''
)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("predict_ops")
    scenes = []
    for seed in (41, 42, 43):
        ds = make_scene(SHAPE, seed=seed)
        p = d / "scenes" / ds.attrs["scene_id"]
        p.parent.mkdir(exist_ok=True)
        write_scene(ds, p)
        scenes.append(p)
    model = random_checkpoint(d / "m.safetensors")
    hooks = d / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK)
    return {"scenes": scenes, "model": model, "hooks": hooks}


def _cmd(env: dict, *args: str) -> list[str]:
    return [sys.executable, "-m", "icechart", "predict", *args, "--model", str(env["model"]), "--device", "cpu"]


def _environ(env: dict, hook: str | None = None) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("ICECHART_")}
    e["XDG_CONFIG_HOME"] = str(env["hooks"] / "xdg")  # no user configuration file leaks in
    e["PYTHONWARNINGS"] = "ignore"
    if hook:
        e["PYTHONPATH"] = os.pathsep.join([str(env["hooks"]), e.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        e["ICECHART_TEST_HOOK"] = hook
    return e


def _run(env: dict, *args: str, hook: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(env, *args), env=_environ(env, hook), capture_output=True, text=True, timeout=300)


def _start(env: dict, *args: str, hook: str) -> subprocess.Popen:
    return subprocess.Popen(_cmd(env, *args), env=_environ(env, hook), stderr=subprocess.PIPE, text=True)


def _wait_for(marker: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240  # a guard against hanging, not a timing assertion
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"predict exited early ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("predict never reached the stalled write")
        time.sleep(0.05)


def _manifests(out: Path) -> list[Path]:
    return sorted(out.glob("*.manifest.json"))


def _temporaries(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.startswith(TMP_PREFIX)] if out.exists() else []


def test_second_run_while_first_holds_the_lock_exits_75(env: dict, tmp_path: Path) -> None:
    out, lock, marker = tmp_path / "out", tmp_path / "predict.lock", tmp_path / "writing"
    first = _start(env, str(env["scenes"][0]), "-o", str(out), "--lock", str(lock), hook=f"stall:{marker}")
    try:
        _wait_for(marker, first)
        second = _run(env, str(env["scenes"][1]), "-o", str(tmp_path / "out2"), "--lock", str(lock))
        assert second.returncode == 75, second.stderr
        assert "lock is held" in second.stderr and f"pid {first.pid}" in second.stderr
        assert not (tmp_path / "out2").exists()  # it did nothing
    finally:
        first.kill()
        first.communicate(timeout=60)
    # The kernel released the dead holder's lock: the next run gets it.
    third = _run(env, str(env["scenes"][1]), "-o", str(tmp_path / "out2"), "--lock", str(lock), "--formats", "netcdf")
    assert third.returncode == 0, third.stderr


def test_sigterm_mid_write_leaves_no_partial_product_and_rerun_completes(env: dict, tmp_path: Path) -> None:
    out, marker = tmp_path / "out", tmp_path / "writing"
    scene = str(env["scenes"][0])
    proc = _start(env, scene, "-o", str(out), hook=f"stall:{marker}")
    _wait_for(marker, proc)
    names = [p.name for p in out.iterdir()]
    assert any(n.startswith(TMP_PREFIX) for n in names) and any(n.endswith("_SOD.tif") for n in names)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM received" in err
    assert list(out.iterdir()) == []  # no temporaries, no manifest, no product of the attempt
    rerun = _run(env, scene, "-o", str(out))
    assert rerun.returncode == 0, rerun.stderr
    (manifest,) = _manifests(out)
    listed = {f["name"] for f in json.loads(manifest.read_text())["files"]}
    assert len(listed) == 19 and listed == {p.name for p in out.iterdir()} - {manifest.name}  # 12 + 7 sidecars
    assert _temporaries(out) == []


def test_rerun_skips_finished_scenes_without_reading_them(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scenes = [str(p) for p in env["scenes"][:2]]
    first = _run(env, *scenes, "-o", str(out), "--formats", "netcdf,png")
    assert first.returncode == 0, first.stderr
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # open_scene, Scene.sar/read and hashing a scene all raise in this run.
    rerun = _run(env, *scenes, "-o", str(out), "--formats", "png,netcdf", hook="noread")
    assert rerun.returncode == 0, rerun.stderr
    lines = [ln for ln in rerun.stderr.splitlines() if "input=" in ln]
    assert len(lines) == 2 and all(" skipped " in ln for ln in lines)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten


def test_corrupt_scene_among_good_ones(env: dict, tmp_path: Path) -> None:
    indir, out = tmp_path / "in", tmp_path / "out"
    indir.mkdir()
    for p in env["scenes"][:2]:
        (indir / p.name).write_bytes(p.read_bytes())
    bad = indir / "20190101T000000_dmi_prep.nc"  # sorts first: the good ones come after it
    bad.write_bytes(env["scenes"][2].read_bytes()[:4000])
    r = _run(env, str(indir), "-o", str(out), "--formats", "netcdf")
    assert r.returncode == 65, r.stderr
    failed = [ln for ln in r.stderr.splitlines() if "failed(65)" in ln]
    assert len(failed) == 1 and str(bad) in failed[0]
    assert len(_manifests(out)) == 2 and len(list(out.glob("*.nc"))) == 2
    assert not list(out.glob("20190101T000000_dmi*"))
    assert "error:" in r.stderr.splitlines()[-1] and bad.name in r.stderr.splitlines()[-1]


def test_out_that_cannot_be_created_is_73_and_nothing_written(env: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _run(env, str(env["scenes"][0]), "-o", str(blocker / "out"))
    assert r.returncode == 73
    assert "cannot create output directory" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"] and blocker.read_text() == "x"


def test_enospc_at_write_is_74_and_nothing_partial(env: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _run(env, str(env["scenes"][0]), "-o", str(out), hook="enospc")
    assert r.returncode == 74, r.stderr
    assert "No space left on device" in r.stderr and "failed(74)" in r.stderr
    assert list(out.iterdir()) == []


# -- in-process (CliRunner): options that need no subprocess ----------------------------------
def test_mostly_invalid_sar_warns_and_strict_fails(env: dict, tmp_path: Path) -> None:
    from icechart.cli.main import cli

    ds = make_scene(SHAPE, seed=44)
    for v in ("nersc_sar_primary", "nersc_sar_secondary"):
        a = ds[v].values.copy()
        a[: int(SHAPE[0] * 0.7)] = np.nan
        ds[v].values = a
    scene = tmp_path / ds.attrs["scene_id"]
    write_scene(ds, scene)
    args = ["predict", str(scene), "--model", str(env["model"]), "--formats", "netcdf", "--device", "cpu"]
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "WARNING" in r.output and "of the SAR is valid" in r.output
    (m,) = _manifests(tmp_path / "a")
    assert "of the SAR is valid" in json.loads(m.read_text())["scene"]["warnings"][0]
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"), "--strict"], catch_exceptions=False)
    assert r.exit_code == 65
    assert "of the SAR is valid" in r.output and "--strict" in r.output
    assert list((tmp_path / "b").iterdir()) == []


def test_autoice_file_rebuilt_from_every_complete_scene(env: dict, tmp_path: Path) -> None:
    import netCDF4

    from icechart.cli.main import cli

    out = tmp_path / "out"
    base = ["predict", "--model", str(env["model"]), "--device", "cpu", "-o", str(out), "--formats", "autoice"]
    r = CliRunner().invoke(cli, [*base, str(env["scenes"][0])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, [*base, str(env["scenes"][0]), str(env["scenes"][1])], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output  # the first scene: skipped, yet in the file
    (auto,) = out.glob("autoice_*.nc")
    with netCDF4.Dataset(auto) as nc:
        ids = sorted({name.rsplit("_", 1)[0] for name in nc.variables})
    assert len(ids) == 2 and all(v.name.startswith(tuple(ids)) for v in env["scenes"][:2])


def test_progress_lines_only_when_asked(env: dict, tmp_path: Path) -> None:
    from icechart.cli.main import cli

    args = ["predict", str(env["scenes"][0]), "--model", str(env["model"]), "--formats", "netcdf", "--device", "cpu"]
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a")], catch_exceptions=False)
    assert r.exit_code == 0 and "scene 1/1" not in r.output
    r = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"), "--progress"], catch_exceptions=False)
    assert r.exit_code == 0 and "scene 1/1" in r.output


def test_config_file_and_environment_reach_predict(env: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icechart.cli.main import cli

    for k in [k for k in os.environ if k.startswith("ICECHART_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    lock = tmp_path / "predict.lock"
    cfg = tmp_path / "ops.toml"
    cfg.write_text(
        f'[predict]\nmodel = "{env["model"]}"\ndevice = "cpu"\nformats = ["netcdf"]\nlock = "{lock}"\n'
    )
    scene = str(env["scenes"][0])
    r = CliRunner().invoke(cli, ["--defaults", str(cfg), "predict", scene, "-o", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert sorted(p.suffix for p in (tmp_path / "a").iterdir()) == [".json", ".nc"] and lock.exists()
    r = CliRunner().invoke(
        cli, ["--defaults", str(cfg), "predict", scene, "-o", str(tmp_path / "b")],
        env={"ICECHART_PREDICT_FORMATS": "netcdf,png"},
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert sorted(p.suffix for p in (tmp_path / "b").iterdir()) == [".json", ".nc", ".png", ".png", ".png"]
