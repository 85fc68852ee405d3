"""`icechart predict`: the command end to end, and every bad-input exit code with its message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.io.contract import DEFAULT_CHANNELS
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint


def _model(path: Path, channels: list[str]) -> Path:
    return random_checkpoint(path, channels=channels)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("cli_predict")
    scenes = d / "scenes"
    scenes.mkdir()
    paths = []
    for seed in (31, 32):
        ds = make_scene((121, 109), seed=seed)
        p = scenes / ds.attrs["scene_id"]
        write_scene(ds, p)
        paths.append(p)
    return {"dir": d, "scenes": paths, "scene_dir": scenes, "model": _model(d / "m.safetensors", list(DEFAULT_CHANNELS))}


def _invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _no_temporaries(out: Path) -> None:
    if out.exists():
        assert not [p for p in out.rglob("*") if p.name.startswith(".tmp-")]


def test_predict_all_formats_skip_refuse_overwrite(data: dict, tmp_path: Path) -> None:
    from icechart import __version__
    from icechart.hashing import sha256_file

    out = tmp_path / "out"
    scene = str(data["scenes"][0])
    r = _invoke("predict", scene, "-o", str(out), "--model", str(data["model"]))
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in out.iterdir())
    assert len([n for n in names if n.endswith(".tif")]) == 3
    assert len([n for n in names if n.endswith(".png")]) == 3
    assert len([n for n in names if n.endswith(".nc")]) == 1
    assert len([n for n in names if "_sigrid3." in n]) == 6  # .shp .shx .dbf .prj .cpg .qml
    assert len([n for n in names if n.endswith((".tif.aux.xml", ".qml"))]) == 7
    (manifest,) = out.glob("*.manifest.json")
    m = json.loads(manifest.read_text())
    assert len(m["files"]) == 19
    assert all(sha256_file(out / f["name"]) == f["sha256"] for f in m["files"])
    assert m["inputs"][0]["name"] == Path(scene).name and m["inputs"][0]["sha256"] == sha256_file(scene)
    assert m["model"]["sha256"] == sha256_file(data["model"]) and m["model"]["id"] in names[0]
    assert m["software"]["version"] == __version__
    assert m["options"]["formats"] == ["netcdf", "geotiff", "shapefile", "png"]
    assert m["options"]["crs"] == "EPSG:3413" and m["options"]["sieve"] == 40
    assert {"read", "forward", "netcdf", "process_s"} <= set(m["timings"])
    # The same run again: up to date, skipped (exit 0); explicit defaults are the same options.
    r = _invoke("predict", scene, "-o", str(out), "--model", str(data["model"]), "--min-area", "25", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "skipped" in r.output
    # Other product options: refused without --overwrite, naming the manifest.
    r = _invoke("predict", scene, "-o", str(out), "--model", str(data["model"]), "--formats", "netcdf")
    assert r.exit_code == 73
    assert manifest.name in r.output and "--overwrite" in r.output and "formats" in r.output
    r = _invoke("predict", scene, "-o", str(out), "--model", str(data["model"]), "--overwrite", "--formats", "netcdf")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted([manifest.name, *[n for n in names if n.endswith(".nc")]])
    _no_temporaries(out)


def test_directory_input_and_autoice(data: dict, tmp_path: Path) -> None:
    import netCDF4

    out = tmp_path / "out"
    r = _invoke("predict", str(data["scene_dir"]), "-o", str(out), "--model", str(data["model"]), "--formats", "autoice")
    assert r.exit_code == 0, r.output
    (auto,) = out.glob("autoice_*.nc")
    with netCDF4.Dataset(auto) as nc:
        assert len(nc.variables) == 6
        for v in nc.variables.values():
            assert v.dtype == np.uint8 and v.shape == (121, 109)
    assert len(list(out.glob("*.manifest.json"))) == 2


def test_products_are_accepted_by_score(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    scene = str(data["scenes"][0])
    assert _invoke("predict", scene, "-o", str(out), "--model", str(data["model"]), "--formats", "netcdf").exit_code == 0
    (nc,) = out.glob("*.nc")
    r = CliRunner().invoke(cli, ["score", "--labels", scene, str(nc), "--json"])
    assert r.exit_code == 0, r.output
    assert "SIC" in r.output or "combined" in r.output


def test_missing_input_is_66(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(tmp_path / "nope_prep.nc"), "-o", str(tmp_path / "out"), "--model", str(data["model"]))
    assert r.exit_code == 66
    assert "no such file" in r.output


def test_empty_directory_is_nothing_to_do(data: dict, tmp_path: Path) -> None:
    # An incoming folder watched by cron is often empty: a warning, not an error.
    (tmp_path / "empty").mkdir()
    r = _invoke("predict", str(tmp_path / "empty"), "-o", str(tmp_path / "out"), "--model", str(data["model"]))
    assert r.exit_code == 0, r.output
    assert "no *.nc scene files" in r.output and "0 scene(s)" in r.output


def test_truncated_scene_is_65(data: dict, tmp_path: Path) -> None:
    bad = tmp_path / "20200101T000000_dmi_prep.nc"
    bad.write_bytes(data["scenes"][0].read_bytes()[:5000])
    out = tmp_path / "out"
    r = _invoke("predict", str(bad), "-o", str(out), "--model", str(data["model"]))
    assert r.exit_code == 65
    assert "20200101T000000_dmi_prep.nc" in r.output
    assert not list(out.glob("*"))


def test_missing_model_is_69(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "none.safetensors"))
    assert r.exit_code == 69
    assert "no such model" in r.output


def test_unknown_model_id_is_69(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path / "o"), "--model", "no-such-model-id")
    assert r.exit_code == 69
    assert "no-such-model-id" in r.output


def test_corrupt_model_is_69(data: dict, tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data["model"].read_bytes()[:300])
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path / "o"), "--model", str(bad))
    assert r.exit_code == 69
    assert "corrupt" in r.output or "not an icechart checkpoint" in r.output


def test_model_channels_missing_from_scene_is_65(data: dict, tmp_path: Path) -> None:
    ds = make_scene((60, 50), seed=4).drop_vars(["btemp_36_5v"])
    p = tmp_path / ds.attrs["scene_id"]
    write_scene(ds, p)
    out = tmp_path / "out"
    r = _invoke("predict", str(p), "-o", str(out), "--model", str(data["model"]))
    assert r.exit_code == 65
    assert "btemp_36_5v" in r.output
    assert not list(out.glob("*"))


def test_unwritable_output_is_73(data: dict, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(blocker / "out"), "--model", str(data["model"]))
    assert r.exit_code == 73
    assert "cannot create output directory" in r.output


def test_bad_format_is_usage_error(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path), "--formats", "netcdf,kmz")
    assert r.exit_code == 2
    assert "unknown format 'kmz'" in r.output


def test_geographic_crs_is_78(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path / "o"), "--model", str(data["model"]), "--crs", "EPSG:4326")
    assert r.exit_code == 78
    assert "not a projected CRS" in r.output
    _no_temporaries(tmp_path / "o")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_69(data: dict, tmp_path: Path) -> None:
    r = _invoke("predict", str(data["scenes"][0]), "-o", str(tmp_path / "o"), "--model", str(data["model"]), "--device", "cuda")
    assert r.exit_code == 69
    assert "no CUDA device" in r.output


def test_batch_goes_on_and_exits_with_first_failure(data: dict, tmp_path: Path) -> None:
    bad = tmp_path / "20200101T000000_dmi_prep.nc"
    bad.write_bytes(b"garbage")
    out = tmp_path / "out"
    r = _invoke("predict", str(bad), str(data["scenes"][1]), "-o", str(out), "--model", str(data["model"]), "--formats", "netcdf")
    assert r.exit_code == 65
    assert len(list(out.glob("*.nc"))) == 1  # the good scene was still done


def test_help_has_examples() -> None:
    r = _invoke("predict", "--help")
    assert r.exit_code == 0 and "Examples" in r.output and "--formats" in r.output


def test_producer_attributes_and_min_area_from_the_config(data: dict, tmp_path: Path) -> None:
    """[predict] institution / creator_* / publisher_* reach the netCDF; min_area the chart;
    both are product options (a rerun with other values is refused without --overwrite)."""
    import netCDF4

    cfg = tmp_path / "icechart.toml"
    cfg.write_text(
        '[predict]\ninstitution = "Example Ice Service"\ncreator_name = "Duty analyst"\n'
        'creator_email = "ice@example.org"\npublisher_name = "Example Met Office"\nmin_area = 5.0\n'
    )
    out = tmp_path / "out"
    scene = str(data["scenes"][0])
    r = _invoke("--defaults", str(cfg), "predict", scene, "-o", str(out), "--model", str(data["model"]),
                "--formats", "netcdf,shapefile")  # fmt: skip
    assert r.exit_code == 0, r.output
    (nc_path,) = out.glob("*.nc")
    with netCDF4.Dataset(nc_path) as nc:
        assert nc.institution == "Example Ice Service" and nc.creator_name == "Duty analyst"
        assert nc.creator_email == "ice@example.org" and nc.publisher_name == "Example Met Office"
    (manifest,) = out.glob("*.manifest.json")
    opts = json.loads(manifest.read_text())["options"]
    assert opts["sieve"] == 8 and opts["metadata"]["institution"] == "Example Ice Service"  # 5 km² at 800 m
    r = _invoke("--defaults", str(cfg), "predict", scene, "-o", str(out), "--model", str(data["model"]),
                "--formats", "netcdf,shapefile", "--institution", "Other")  # fmt: skip
    assert r.exit_code == 73 and "--overwrite" in r.output
