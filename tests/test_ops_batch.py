"""Batch runner, manifests and rerun skipping, with a stand-in per-scene function."""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import icechart.io.scene as scene_mod
from icechart.atomic import TMP_PREFIX, atomic_path
from icechart.errors import BadDataError, DataWarning, OutputError
from icechart.ops import batch as B
from icechart.ops import manifest as M
from icechart.synth import write_scenes

MODEL = "tst"
OPTS = {"formats": ["netcdf", "png"], "crs": 3413, "resolution": 200.0}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("scenes")
    write_scenes(d, n=2, size=(60, 55), seed=3)
    return d


@pytest.fixture
def scenes(scene_dir: Path, tmp_path: Path) -> list[Path]:
    """Fresh copies (mtime and content owned by the test)."""
    out = []
    (tmp_path / "in").mkdir()
    for p in sorted(scene_dir.glob("*_prep.nc")):
        q = tmp_path / "in" / p.name
        q.write_bytes(p.read_bytes())
        out.append(q)
    return out


def standin(outdir: Path, *, warn: str | None = None, fail_write: OSError | None = None):
    """A per-scene function shaped like the real one: opens the scene, reads SAR, writes files."""

    def process(path: Path) -> list[Path]:
        sc = scene_mod.open_scene(path)
        try:
            sar = sc.sar("nersc_sar_primary")
            if warn:
                warnings.warn(warn, DataWarning)
            files = []
            for name in (f"{sc.scene_id}_{MODEL}.nc", f"{sc.scene_id}_{MODEL}_SIC.png"):
                dest = outdir / name
                with atomic_path(dest) as tmp:
                    with open(tmp, "wb") as fh:
                        fh.write(np.nan_to_num(sar).tobytes()[:1000])
                        if fail_write is not None:
                            raise fail_write
                files.append(dest)
            return files
        finally:
            sc.close()

    return process


def run(scenes, out, **kw):
    proc = kw.pop("process", None) or standin(out)
    args = dict(outdir=out, model_id=MODEL, model_sha256="ab" * 32, options=OPTS, device="cpu")
    args.update(kw)
    return B.run_batch(scenes, proc, **args)


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.startswith(TMP_PREFIX))


def test_batch_writes_products_and_manifest_last(scenes, tmp_path, caplog):
    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="icechart")
    res = run([scenes[0].parent], out)
    assert res.exit_code == 0 and [r.status for r in res.results] == ["ok", "ok"]
    for r in res.results:
        m = json.loads(M.manifest_path(out, r.scene_id, MODEL).read_text())
        assert m["scene_id"] == r.scene_id
        assert m["model"] == {"id": MODEL, "sha256": "ab" * 32}
        assert m["inputs"][0]["sha256"] == M.sha256_file(r.path)
        assert m["options"]["formats"] == ["netcdf", "png"]
        assert m["software"]["name"] == "icechart"
        assert "process_s" in m["timings"]
        for f in m["files"]:
            assert M.sha256_file(out / f["name"]) == f["sha256"]
        # written last: newer than every product file
        mt = M.manifest_path(out, r.scene_id, MODEL).stat().st_mtime_ns
        assert all((out / f["name"]).stat().st_mtime_ns <= mt for f in m["files"])
    summaries = [rec.getMessage() for rec in caplog.records if "device=cpu" in rec.getMessage()]
    assert len(summaries) == 2 and all(" ok " in s and "peak_rss=" in s for s in summaries)
    assert leftovers(out) == []


def test_rerun_skips_without_reading_sar(scenes, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert run(scenes, out).exit_code == 0

    def boom(*a, **k):
        raise AssertionError("a skipped scene must not be opened")

    monkeypatch.setattr(scene_mod, "open_scene", boom)
    monkeypatch.setattr(scene_mod.Scene, "sar", boom)
    monkeypatch.setattr(scene_mod.Scene, "read", boom)
    monkeypatch.setattr(M, "sha256_file", boom)  # unchanged size+mtime: no hashing either
    t0 = time.perf_counter()
    res = run(scenes, out, device="cuda")  # the device does not count
    per_scene = (time.perf_counter() - t0) / len(scenes)
    assert [r.status for r in res.results] == ["skipped", "skipped"] and res.exit_code == 0
    print(f"\nskip check: {per_scene * 1000:.1f} ms per skipped scene")


def test_touched_input_is_hashed_and_still_skipped(scenes, tmp_path):
    out = tmp_path / "out"
    run(scenes, out)
    st = scenes[0].stat()
    os.utime(scenes[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert [r.status for r in run(scenes, out).results] == ["skipped", "skipped"]


def test_changed_input_refused_without_overwrite(scenes, tmp_path):
    out = tmp_path / "out"
    run(scenes, out)
    with open(scenes[1], "r+b") as fh:  # same size, other content
        fh.seek(-8, os.SEEK_END)
        fh.write(b"\0" * 8)
    res = run(scenes, out)
    assert [r.status for r in res.results] == ["skipped", "failed"]
    assert res.exit_code == 73
    assert "manifest.json" in res.results[1].message and "--overwrite" in res.results[1].message
    assert "input content changed" in res.results[1].message
    err = B.BatchError(res)
    assert err.exit_code == 73 and "1 of 2 scene(s) failed" in err.message


def test_other_options_refused_then_overwritten(scenes, tmp_path):
    out = tmp_path / "out"
    run(scenes[:1], out)
    opts = dict(OPTS, formats=["netcdf"])
    only_nc = standin(out)

    def nc_only(path: Path) -> list[Path]:
        return [f for f in only_nc(path) if f.suffix == ".nc"]

    res = run(scenes[:1], out, options=opts, process=nc_only)
    assert res.exit_code == 73 and "formats" in res.results[0].message
    res = run(scenes[:1], out, options=opts, process=nc_only, overwrite=True)
    assert res.exit_code == 0
    m = json.loads(M.manifest_path(out, res.results[0].scene_id, MODEL).read_text())
    assert [f["name"] for f in m["files"]] == [f"{res.results[0].scene_id}_{MODEL}.nc"]
    assert not list(out.glob("*_SIC.png"))  # the old set's extra file is gone


def test_corrupt_scene_among_good_ones(scenes, tmp_path, caplog):
    out = tmp_path / "out"
    bad = scenes[0].parent / "20210101T000000_dmi_prep.nc"
    bad.write_bytes(b"not a netcdf file" * 10)
    caplog.set_level(logging.INFO, logger="icechart")
    res = run([scenes[0].parent], out)
    assert [r.status for r in res.results] == ["failed", "ok", "ok"]
    assert res.exit_code == 65
    bad_lines = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(bad_lines) == 1 and str(bad) in bad_lines[0] and "failed(65)" in bad_lines[0]
    assert not list(out.glob("20210101T000000_dmi*"))
    assert len(list(out.glob("*.manifest.json"))) == 2


def test_exit_code_is_first_failure_in_input_order(scenes, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "20210101T000000_dmi_prep.nc"
    bad.write_bytes(b"junk")
    res = run([tmp_path / "missing_prep.nc", bad, *scenes], out)
    assert [r.exit_code for r in res.results] == [66, 65, 0, 0]
    assert res.exit_code == 66


@pytest.mark.parametrize(
    ("exc", "code"), [(RuntimeError("bug"), 70), (MemoryError(), 75), (BadDataError("x"), 65)]
)
def test_exceptions_map_to_codes(scenes, tmp_path, exc, code):
    out = tmp_path / "out"

    def process(path: Path) -> list[Path]:
        (out / f"{B.scene_id_for(path)}_{MODEL}_SIC.png").write_bytes(b"half a set")
        raise exc

    res = run(scenes[:1], out, process=process)
    assert res.exit_code == code
    assert list(out.iterdir()) == []  # the file this attempt created is removed


def test_out_that_cannot_be_created(scenes, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError) as ei:
        run(scenes, blocker / "out")
    assert ei.value.exit_code == 73 and "cannot create output directory" in ei.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "in"]


def test_enospc_at_write_is_74_and_nothing_partial(scenes, tmp_path):
    out = tmp_path / "out"
    proc = standin(out, fail_write=OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    res = run(scenes, out, process=proc)
    assert res.exit_code == 74 and "No space left" in res.results[0].message
    assert list(out.iterdir()) == []


def test_data_warning_logged_or_strict(scenes, tmp_path, caplog):
    out = tmp_path / "out"
    proc = standin(out, warn="62% of the SAR is invalid")
    caplog.set_level(logging.INFO, logger="icechart")
    res = run(scenes[:1], out, process=proc)
    assert res.exit_code == 0 and res.results[0].warnings
    assert any("62% of the SAR" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    out2 = tmp_path / "out2"
    res = run(scenes[:1], out2, process=standin(out2, warn="62% of the SAR is invalid"), strict=True)
    assert res.exit_code == 65 and "--strict" in res.results[0].message
    assert list(out2.iterdir()) == []


def test_duplicate_scene_id_fails_second(scenes, tmp_path):
    out = tmp_path / "out"
    twin = tmp_path / "copy" / scenes[0].name
    twin.parent.mkdir()
    twin.write_bytes(scenes[0].read_bytes())
    res = run([scenes[0], twin], out)
    assert [r.exit_code for r in res.results] == [0, 65]
    assert "same scene id" in res.results[1].message
    assert M.manifest_path(out, res.results[0].scene_id, MODEL).exists()


def test_unfinished_set_is_completed(scenes, tmp_path):
    out = tmp_path / "out"
    run(scenes[:1], out)
    sid = B.scene_id_for(scenes[0])
    M.manifest_path(out, sid, MODEL).unlink()  # as if killed before the manifest
    res = run(scenes[:1], out)
    assert res.results[0].status == "ok" and M.manifest_path(out, sid, MODEL).exists()


def test_collect_scenes_filters_and_sorts(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for n in ("b_prep.nc", "a.nc", "x_reference.nc", ".tmp-a.nc", "notes.txt", "autoice_m.nc",
              "p_m.nc", "p_m.manifest.json"):
        (d / n).write_text("x")
    extra = tmp_path / "z_prep.nc"
    got = B.collect_scenes([extra, d, d / "a.nc"])
    assert [p.name for p in got] == ["z_prep.nc", "a.nc", "b_prep.nc"]


def test_complete_scenes_lists_manifests(scenes, tmp_path):
    out = tmp_path / "out"
    run(scenes, out)
    got = M.complete_scenes(out, MODEL)
    assert [g["scene_id"] for g in got] == sorted(B.scene_id_for(s) for s in scenes)


def test_run_guarded_raises_first_code_and_honours_lock(scenes, tmp_path):
    from icechart.errors import TryAgainError
    from icechart.ops.lock import run_lock

    out = tmp_path / "out"
    bad = tmp_path / "20210101T000000_dmi_prep.nc"
    bad.write_bytes(b"junk")
    args = dict(outdir=out, model_id=MODEL, model_sha256=None, options=OPTS, device="cpu")
    with pytest.raises(B.BatchError) as ei:
        B.run_guarded([*scenes, bad], standin(out), lock=tmp_path / "l", **args)
    assert ei.value.exit_code == 65 and str(bad) in ei.value.message
    with run_lock(tmp_path / "l"):
        with pytest.raises(TryAgainError):
            B.run_guarded(scenes, standin(out), lock=tmp_path / "l", **args)
    assert B.run_guarded(scenes, standin(out), **args).count("skipped") == 2


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAKE = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$(dirname "$0")/args"
exit {code}
"""


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (75, 0), (65, 65)])
def test_watch_folder_script(tmp_path, code, expected):
    import subprocess

    incoming, out = tmp_path / "in", tmp_path / "out"
    incoming.mkdir()
    for n in ("20210101T000000_dmi_prep.nc", "20210102T000000_dmi_prep.nc", "notes.txt"):
        (incoming / n).write_text("x")
    fake = tmp_path / "bin" / "icechart"
    fake.parent.mkdir()
    fake.write_text(FAKE.format(code=code))
    fake.chmod(0o755)
    r = subprocess.run(
        ["bash", str(EXAMPLES / "watch-folder.sh"), str(incoming), str(out), "0"],
        env={"ICECHART": str(fake), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == expected, r.stderr
    args = (fake.parent / "args").read_text().split("\n")
    assert args[0] == "predict"
    assert [Path(a).name for a in args if a.endswith(".nc")] == [
        "20210101T000000_dmi_prep.nc", "20210102T000000_dmi_prep.nc"
    ]
    assert args[args.index("-o") + 1] == str(out) and args[args.index("--lock") + 1] == f"{out}/.icechart.lock"
