"""Manifests: a rerun matches a finished scene only when input and product files are unchanged."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from icechart.ops import manifest as M
from icechart.products.netcdf import global_attrs


def _finished(tmp_path: Path) -> tuple[dict, Path, Path]:
    src = tmp_path / "20210315T042109_dmi_prep.nc"
    src.write_bytes(b"x" * 100)
    prod = tmp_path / "p.nc"
    prod.write_bytes(b"y" * 50)
    data = M.build_manifest(
        scene_id="20210315T042109_dmi", input_path=src, model_id="m", model_sha256="a" * 64,
        options={"formats": ["netcdf"]}, files=[prod], device="cpu", timings={},
    )  # fmt: skip
    data["_dir"] = str(tmp_path)
    assert M.compare(data, input_path=src, model_id="m", model_sha256="a" * 64, options={"formats": ["netcdf"]}) is None
    return data, src, prod


def _keep_mtime(path: Path, change: bytes) -> None:
    st = path.stat()
    with open(path, "ab") as fh:
        fh.write(change)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_input_size_change_is_seen_even_with_the_same_mtime(tmp_path: Path) -> None:
    data, src, _ = _finished(tmp_path)
    _keep_mtime(src, b"z")
    why = M.compare(data, input_path=src, model_id="m", model_sha256="a" * 64, options={"formats": ["netcdf"]})
    assert why == "input size changed"


def test_product_file_size_change_is_seen(tmp_path: Path) -> None:
    """A product changed or gone makes the scene redo (M.damage), even with its mtime kept."""
    data, src, prod = _finished(tmp_path)
    assert M.damage(data) is None
    _keep_mtime(prod, b"z")
    assert M.damage(data) == "product file p.nc changed size"
    prod.unlink()
    assert M.damage(data) == "product file p.nc is missing"


def test_acdd_time_coverage_is_the_acquisition_time_in_utc() -> None:
    acquired = datetime(2021, 3, 15, 6, 21, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    attrs = global_attrs(
        scene_id="20210315T042109_dmi", acquired=acquired, model_id="m", model_sha256="a" * 64,
        input_name="x.nc", input_sha256=None, command="icechart predict x.nc",
    )  # fmt: skip
    assert attrs["time_coverage_start"] == "2021-03-15T04:21:09+00:00"
    assert attrs["time_coverage_end"] == "2021-03-15T04:21:09+00:00"
    assert attrs["history"].endswith(" icechart predict x.nc")
    assert attrs["date_created"] == attrs["history"].split()[0]
    assert attrs["input_sha256"] == ""


def test_predict_batch_is_a_library_call_hashing_each_input_once(tmp_path: Path, monkeypatch) -> None:
    """icechart.predict_batch: the command's batch from Python (manifest, rerun skip), and the
    manifest reuses the input digest made for the netCDF instead of hashing the file again."""
    import json

    import icechart
    import icechart.hashing
    from icechart.synth import make_scene, write_scene
    from icechart.testing import random_checkpoint

    ds = make_scene((70, 64), seed=4)
    scene = tmp_path / ds.attrs["scene_id"]
    write_scene(ds, scene)
    model = random_checkpoint(tmp_path / "m.safetensors")
    real = icechart.hashing.sha256_file
    hashed: list[Path] = []

    def counting(path):  # type: ignore[no-untyped-def]
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(icechart.hashing, "sha256_file", counting)
    monkeypatch.setattr(M, "sha256_file", counting)
    out = tmp_path / "out"
    res = icechart.predict_batch([scene], out, model=str(model), formats="netcdf", device="cpu")
    assert [r.status for r in res.results] == ["ok"] and res.exit_code == 0
    assert hashed.count(scene) == 1
    (mf,) = out.glob("*.manifest.json")
    doc = json.loads(mf.read_text())
    assert doc["inputs"][0]["sha256"] == real(scene) and doc["options"]["formats"] == ["netcdf"]
    again = icechart.predict_batch([scene], out, model=str(model), formats="netcdf", device="cpu")
    assert [r.status for r in again.results] == ["skipped"]

