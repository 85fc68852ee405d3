"""``icechart score`` end to end: file formats, matching, outputs and every bad-input exit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import fiona
import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import box, mapping
from sklearn.metrics import f1_score, r2_score

from icechart.classes import FILL
from icechart.cli.main import cli
from icechart.synth import make_scene, write_scene

CHARTS = ("SIC", "SOD", "FLOE")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("score")
    refs = root / "refs"
    refs.mkdir()
    labels = {}
    for i, shape in enumerate([(60, 50), (45, 70)]):
        ds = make_scene(shape, seed=10 + i)
        sid = ds.attrs["scene_id"][:19]
        write_scene(ds, refs / f"{sid}_prep.nc")
        labels[sid] = {c: ds[c].values.copy() for c in CHARTS}
    rng = np.random.default_rng(0)
    preds = {}
    for sid, lab in labels.items():
        p = {}
        for c, a in lab.items():
            noisy = np.where(a == FILL, 0, a).astype(np.uint8)
            flip = rng.random(a.shape) < 0.3
            noisy[flip] = rng.integers(0, {"SIC": 11, "SOD": 6, "FLOE": 7}[c], int(flip.sum()))
            p[c] = noisy
        preds[sid] = p
    return {"root": root, "refs": refs, "labels": labels, "preds": preds}


def write_product(path: Path, charts: dict[str, np.ndarray], *, sic_percent: bool = True) -> Path:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("sar_lines", charts["SIC"].shape[0])
        nc.createDimension("sar_samples", charts["SIC"].shape[1])
        for c in CHARTS:
            v = nc.createVariable(c, "u1", ("sar_lines", "sar_samples"), fill_value=255)
            a = charts[c]
            if c == "SIC" and sic_percent:
                v.units = "%"
                a = np.where(a == FILL, FILL, a.astype(np.int32) * 10).astype(np.uint8)
            v[:] = a
    return path


def write_autoice(path: Path, preds: dict[str, dict[str, np.ndarray]]) -> Path:
    with netCDF4.Dataset(path, "w") as nc:
        for sid, charts in preds.items():
            for c in CHARTS:
                name = f"{sid}_{c}"
                nc.createDimension(f"{name}_dim0", charts[c].shape[0])
                nc.createDimension(f"{name}_dim1", charts[c].shape[1])
                v = nc.createVariable(name, "u1", (f"{name}_dim0", f"{name}_dim1"), zlib=True, complevel=1)
                v[:] = charts[c]
    return path


def expected_scores(labels: dict, preds: dict) -> dict[str, float]:
    out = {}
    for c in CHARTS:
        r = np.concatenate([labels[s][c].ravel() for s in labels])
        p = np.concatenate([preds[s][c].ravel() for s in labels])
        keep = r != FILL
        if c == "SIC":
            out[c] = 100 * r2_score(r[keep].astype(float), p[keep].astype(float))
        else:
            out[c] = 100 * f1_score(r[keep], p[keep], average="weighted")
    out["combined"] = (2 * out["SIC"] + 2 * out["SOD"] + out["FLOE"]) / 5
    return out


def run(*args: str) -> object:
    return CliRunner().invoke(cli, ["score", *args])


def test_products_json_csv_plots(tmp_path: Path, data: dict) -> None:
    pdir = tmp_path / "charts"
    pdir.mkdir()
    for sid, p in data["preds"].items():
        write_product(pdir / f"{sid}_mmseaice.nc", p)
    res = run(
        "--labels", str(data["refs"]), str(pdir), "--json-file", str(tmp_path / "s.json"),
        "--csv", str(tmp_path / "s.csv"), "--plots", str(tmp_path / "plots"),
    )
    assert res.exit_code == 0, res.output
    assert "combined" in res.output and "AutoICE" in res.output
    doc = json.loads((tmp_path / "s.json").read_text())
    exp = expected_scores(data["labels"], data["preds"])
    for k, v in exp.items():
        assert doc[k] == pytest.approx(v, abs=1e-6)
    assert doc["autoice"]["SIC"] == pytest.approx(np.round(exp["SIC"], 3), abs=1e-9)
    assert set(doc["scenes"]) == set(data["labels"])
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert [r["scene_id"] for r in rows] == sorted(data["labels"])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_FLOE.png", "confusion_SIC.png", "confusion_SOD.png",
    ]


def test_autoice_file_and_json_stdout(tmp_path: Path, data: dict) -> None:
    sub = write_autoice(tmp_path / "autoice_mmseaice.nc", data["preds"])
    res = run("--labels", str(data["refs"] / "*_prep.nc"), str(sub), "--json", "-")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    exp = expected_scores(data["labels"], data["preds"])
    assert doc["combined"] == pytest.approx(exp["combined"], abs=1e-6)


def test_json_is_one_flag_and_the_old_values_still_work(tmp_path: Path, data: dict) -> None:
    """--json is the flag of every command (JSON on stdout); --json-file FILE writes it beside
    the table; the old `--json -` and `--json FILE.json` forms still do what they did."""
    sub = write_autoice(tmp_path / "autoice_mmseaice.nc", data["preds"])
    flag = run("--labels", str(data["refs"]), str(sub), "--json")
    assert flag.exit_code == 0, flag.output
    doc = json.loads(flag.stdout)
    old_stdout = run("--labels", str(data["refs"]), "--json", "-", str(sub))
    assert old_stdout.exit_code == 0 and json.loads(old_stdout.stdout) == doc
    new_file = run("--labels", str(data["refs"]), str(sub), "--json-file", str(tmp_path / "new.json"))
    assert new_file.exit_code == 0 and "AutoICE" in new_file.stdout
    old_file = run("--labels", str(data["refs"]), "--json", str(tmp_path / "old.json"), str(sub))
    assert old_file.exit_code == 0 and "AutoICE" in old_file.stdout and "deprecated" in old_file.stderr
    assert json.loads((tmp_path / "old.json").read_text()) == json.loads((tmp_path / "new.json").read_text()) == doc
    both = run("--labels", str(data["refs"]), str(sub), "--json", "a.json", "--json-file", "b.json")
    assert both.exit_code == 2 and "one --json-file" in both.output


def test_perfect_prediction_scores_100(tmp_path: Path, data: dict) -> None:
    sub = write_autoice(tmp_path / "a.nc", data["labels"])  # labels as the prediction
    res = run("--labels", str(data["refs"]), str(sub), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["autoice"] == {"SIC": 100.0, "SOD": 100.0, "FLOE": 100.0, "combined": 100.0}


def test_reference_files_from_test_split(tmp_path: Path) -> None:
    from icechart.synth import write_scenes

    write_scenes(tmp_path / "test", n=1, size=(40, 40), seed=3, test=True)
    scene = next((tmp_path / "test").glob("*_prep.nc"))
    ref = next((tmp_path / "test" / "reference").glob("*_reference.nc"))
    sid = ref.name[:19]
    with netCDF4.Dataset(ref) as nc:
        lab = {c: np.asarray(nc[c][:]) for c in CHARTS}
    pred = write_product(tmp_path / f"{sid}_m.nc", lab)
    ok = run("--labels", str(ref), str(pred))
    assert ok.exit_code == 0, ok.output
    bad = run("--labels", str(scene), str(pred))  # a test scene carries no labels
    assert bad.exit_code == 65
    assert "no labelled pixels" in bad.output


def test_all_255_reference_is_no_labelled_pixels(tmp_path: Path) -> None:
    empty = {c: np.full((30, 30), FILL, np.uint8) for c in CHARTS}
    ref = write_product(tmp_path / "20200101T000000_dmi_reference.nc", empty, sic_percent=False)
    pred = write_product(tmp_path / "20200101T000000_dmi_m.nc", empty)
    res = run("--labels", str(ref), str(pred))
    assert res.exit_code == 65
    assert "no labelled pixels" in res.output


def test_shape_mismatch_names_both_files(tmp_path: Path, data: dict) -> None:
    sid, lab = next(iter(data["labels"].items()))
    ref = data["refs"] / f"{sid}_prep.nc"
    small = {c: a[:-1] for c, a in data["preds"][sid].items()}
    pred = write_product(tmp_path / f"{sid}_m.nc", small)
    res = run("--labels", str(ref), str(pred))
    assert res.exit_code == 65
    assert str(ref) in res.output and str(pred) in res.output


def test_unmatched_lists_every_file(tmp_path: Path, data: dict) -> None:
    sid = next(iter(data["labels"]))
    a = write_product(tmp_path / "20000101T000000_dmi_m.nc", data["preds"][sid])
    b = write_product(tmp_path / "20000102T000000_dmi_m.nc", data["preds"][sid])
    res = run("--labels", str(data["refs"] / f"{sid}_prep.nc"), str(a), str(b))
    assert res.exit_code == 65
    assert str(a) in res.output and str(b) in res.output and sid in res.output


def test_duplicate_scene_ids(tmp_path: Path, data: dict) -> None:
    sid = next(iter(data["labels"]))
    a = write_product(tmp_path / f"{sid}_model1.nc", data["preds"][sid])
    b = write_product(tmp_path / f"{sid}_model2.nc", data["preds"][sid])
    res = run("--labels", str(data["refs"] / f"{sid}_prep.nc"), str(a), str(b))
    assert res.exit_code == 65
    assert "appears twice" in res.output


def test_sic_percent_not_multiple_of_10(tmp_path: Path, data: dict) -> None:
    sid = next(iter(data["labels"]))
    path = write_product(tmp_path / f"{sid}_m.nc", data["preds"][sid])
    with netCDF4.Dataset(path, "a") as nc:
        nc["SIC"][0, 0] = 65
    res = run("--labels", str(data["refs"] / f"{sid}_prep.nc"), str(path))
    assert res.exit_code == 65
    assert "65" in res.output and "multiple of 10" in res.output


def test_missing_inputs_66(tmp_path: Path, data: dict) -> None:
    res = run("--labels", str(tmp_path / "nope.nc"), str(tmp_path))
    assert res.exit_code == 66
    assert "nope.nc" in res.output
    res = run("--labels", str(data["refs"]), str(tmp_path / "absent_pred.nc"))
    assert res.exit_code == 66
    res = run("--labels", str(tmp_path / "*.nothing"), str(tmp_path))
    assert res.exit_code == 66
    assert "no file matches" in res.output


def test_not_netcdf_65(tmp_path: Path, data: dict) -> None:
    junk = tmp_path / "20200101T000000_dmi_m.nc"
    junk.write_bytes(b"junk")
    res = run("--labels", str(data["refs"]), str(junk))
    assert res.exit_code == 65
    assert "not a readable netCDF" in res.output


def test_sigrid_chart_needs_scene(tmp_path: Path) -> None:
    chart = tmp_path / "c.shp"
    chart.write_bytes(b"")
    res = run("--labels", str(chart), str(tmp_path))
    assert res.exit_code == 2
    assert "--scene" in res.output


def test_sigrid_chart_with_scene(tmp_path: Path) -> None:
    ds = make_scene((60, 60), seed=5, center=(74.0, -70.0))
    sid = ds.attrs["scene_id"][:19]
    scene = tmp_path / f"{sid}_prep.nc"
    write_scene(ds, scene)
    lat, lon = 74.0, -70.0
    chart = tmp_path / "chart.shp"
    props = {"CT": "92", "CA": "-9", "SA": "95", "FA": "06", "POLY_TYPE": "I"}
    schema = {"geometry": "Polygon", "properties": {k: "str:2" for k in props}}
    with fiona.open(chart, "w", driver="ESRI Shapefile", crs="EPSG:4326", schema=schema) as dst:
        dst.write({"geometry": mapping(box(lon - 3, lat - 1, lon + 3, lat + 1)), "properties": props})
    valid = np.isfinite(ds["nersc_sar_primary"].values)
    pred = {c: np.where(valid, v, FILL).astype(np.uint8) for c, v in (("SIC", 10), ("SOD", 5), ("FLOE", 5))}
    pfile = write_product(tmp_path / f"{sid}_m.nc", pred)
    res = run("--labels", str(chart), "--scene", str(scene), str(pfile), "--json", "-")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["autoice"]["combined"] == 100.0
    nic = tmp_path / "nic.shp"
    with fiona.open(nic, "w", driver="ESRI Shapefile", crs="EPSG:4326", schema={"geometry": "Polygon", "properties": {"ICECODE": "str:45"}}) as dst:
        dst.write({"geometry": mapping(box(lon - 3, lat - 1, lon + 3, lat + 1)), "properties": {"ICECODE": "CT99"}})
    res = run("--labels", str(nic), "--scene", str(scene), str(pfile))
    assert res.exit_code == 65
    assert "no labelled pixels" in res.output
