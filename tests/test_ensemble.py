"""Ensembles, test-time augmentation, temperature scaling, ECE and the uncertainty products."""

from __future__ import annotations

import json
import math
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner

from icechart.calibration import (
    ReliabilityAccumulator,
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from icechart.cli.main import cli
from icechart.errors import ModelError
from icechart.infer import forward as F
from icechart.infer import predict as P
from icechart.model.load import load_model
from icechart.io.scene import open_scene
from icechart.model.checkpoint import load_checkpoint
from icechart.model.ensemble import EnsembleModel, load_ensemble, write_manifest
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint

CHANNELS = ["nersc_sar_primary", "nersc_sar_secondary", "btemp_18_7h", "month"]


def save_member(path: Path, *, seed: int, factor: int = 10, channels: list[str] = CHANNELS,
                norm_shift: float = 0.0, calibration: dict | None = None) -> Path:  # fmt: skip
    return random_checkpoint(
        path, channels=channels, filters=(4, 8), factor=factor, seed=seed, norm_shift=norm_shift,
        extra_meta={"calibration": calibration} if calibration else None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("ens")
    ds = make_scene((120, 110), seed=21)
    scene = d / ds.attrs["scene_id"]
    write_scene(ds, scene)
    save_member(d / "a.safetensors", seed=1)
    save_member(d / "b.safetensors", seed=2, norm_shift=0.5)  # other statistics: normalised apart
    manifest = write_manifest(d / "ensemble.toml", ["a.safetensors", "b.safetensors"], info={"seeds": [1, 2]})
    return {"dir": d, "scene": scene, "manifest": manifest}


def test_ensemble_averages_members(data: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    ens = load_model(str(data["manifest"]))
    assert isinstance(ens, EnsembleModel) and len(ens.members) == 2
    assert ens.model_id == f"ens-{ens.sha256[:12]}"
    calls = []
    real = P.scene_features
    monkeypatch.setattr(P, "scene_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    with open_scene(data["scene"]) as scene:
        pred = P.predict_scene(scene, ens)
        assert len(calls) == 1  # inputs read and features built once for both members
        singles = [P.predict_scene(scene, load_model(str(data["dir"] / n))) for n in ("a.safetensors", "b.safetensors")]
    for chart in ("SOD", "FLOE"):
        manual = (singles[0].probs[chart] + singles[1].probs[chart]) / 2
        np.testing.assert_allclose(pred.probs[chart], manual, atol=1e-6)
    np.testing.assert_allclose(pred.sic, (singles[0].sic + singles[1].sic) / 2, atol=1e-6)
    se = np.abs(singles[0].sic - singles[1].sic) / math.sqrt(2)  # sample SD of two values
    np.testing.assert_allclose(pred.sic_se, se, atol=1e-5)
    assert pred.members == 2 and singles[0].sic_se is None
    assert pred.model_sha256 == ens.sha256


def test_mismatch_refused_naming_member(data: dict, tmp_path: Path) -> None:
    save_member(tmp_path / "one.safetensors", seed=1)
    save_member(tmp_path / "two.safetensors", seed=2, factor=5)
    mf = write_manifest(tmp_path / "ensemble.toml", ["one.safetensors", "two.safetensors"])
    with pytest.raises(ModelError, match="member two.safetensors has factor = 5"):
        load_ensemble(mf)
    save_member(tmp_path / "three.safetensors", seed=3, channels=CHANNELS[:3] + ["lat"])
    write_manifest(tmp_path / "ensemble.toml", ["one.safetensors", "three.safetensors"])
    res = CliRunner().invoke(cli, ["predict", str(data["scene"]), "-o", str(tmp_path / "out"), "--model", str(tmp_path)])
    assert res.exit_code == 69
    assert "member three.safetensors has channels" in res.output
    write_manifest(tmp_path / "ensemble.toml", ["one.safetensors", "missing.safetensors"])
    with pytest.raises(ModelError, match="member missing.safetensors not found"):
        load_ensemble(tmp_path)


def test_member_paths_stay_inside_the_ensemble_directory(tmp_path: Path) -> None:
    """A relative member that climbs out of the manifest's directory is refused (69); an
    absolute path, named on purpose, is allowed."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    save_member(outside / "x.safetensors", seed=1)
    (tmp_path / "ens").mkdir()
    save_member(tmp_path / "ens" / "one.safetensors", seed=2)
    write_manifest(tmp_path / "ens" / "ensemble.toml", ["one.safetensors", "../elsewhere/x.safetensors"])
    with pytest.raises(ModelError, match="points outside the ensemble directory"):
        load_ensemble(tmp_path / "ens")
    write_manifest(tmp_path / "ens" / "ensemble.toml", ["one.safetensors", str(outside / "x.safetensors")])
    assert len(load_ensemble(tmp_path / "ens").members) == 2


def test_tta_is_flip_equivariant(data: dict) -> None:
    model = load_checkpoint(data["dir"] / "a.safetensors")
    x = np.random.default_rng(0).normal(size=(len(CHANNELS), 32, 32)).astype(np.float32)
    sic, probs = F.forward_tta(model, x, tile_size=None, tta=True)
    assert sic is not None
    for axes in ((2,), (1,), (1, 2)):
        sic_f, probs_f = F.forward_tta(model, np.ascontiguousarray(np.flip(x, axes)), tile_size=None, tta=True)
        np.testing.assert_allclose(sic_f, np.flip(sic, tuple(a - 1 for a in axes)), atol=1e-5)
        for chart in ("SOD", "FLOE"):
            np.testing.assert_allclose(probs_f[chart], np.flip(probs[chart], axes), atol=1e-5)
    # without TTA the network alone is not equivariant
    sic0, _ = F.forward_tta(model, x, tile_size=None)
    sic1, _ = F.forward_tta(model, np.ascontiguousarray(np.flip(x, (2,))), tile_size=None)
    assert not np.allclose(sic1, np.flip(sic0, (1,)), atol=1e-5)


def test_temperature_fit_recovers_known_temperature() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(scale=3.0, size=(6, 40000))
    p = apply_temperature(np.exp(z) / np.exp(z).sum(axis=0), 2.0).astype(np.float64)
    u = rng.random(z.shape[1])
    labels = (p.cumsum(axis=0) < u).sum(axis=0).clip(0, 5)
    fit = fit_temperature(z, labels)
    assert abs(fit.temperature - 2.0) < 0.1
    assert fit.nll_after < fit.nll_before and fit.ece_after < fit.ece_before
    # apply_temperature on probabilities equals softmax(z / T)
    sm = np.exp(z / 2.0) / np.exp(z / 2.0).sum(axis=0)
    np.testing.assert_allclose(p, sm, atol=1e-5)


def test_ece_equals_direct_computation() -> None:
    rng = np.random.default_rng(5)
    conf = rng.random(5000)
    conf[:7] = [0.0, 1.0, 1 / 15, 2 / 15, 0.5, 14 / 15, 0.9999]
    correct = rng.random(5000) < conf**0.7
    direct = 0.0
    for b in range(15):
        lo, hi = b / 15, (b + 1) / 15
        sel = (conf >= lo) & ((conf < hi) if b < 14 else (conf <= hi))
        if sel.any():
            direct += sel.sum() / conf.size * abs(correct[sel].mean() - conf[sel].mean())
    assert expected_calibration_error(conf, correct) == pytest.approx(direct, abs=1e-12)
    # streaming in pieces gives the same
    acc = ReliabilityAccumulator()
    for k in range(0, 5000, 700):
        part = ReliabilityAccumulator()
        part.update(conf[k : k + 700], correct[k : k + 700])
        acc.add(part)
    assert acc.ece() == pytest.approx(direct, abs=1e-12)
    assert acc.to_dict()["n_pixels"] == 5000


def test_calibration_temperature_is_applied(data: dict, tmp_path: Path) -> None:
    raw = save_member(tmp_path / "raw.safetensors", seed=1)
    cal = save_member(tmp_path / "cal.safetensors", seed=1,
                      calibration={"method": "temperature", "temperature": {"SOD": 2.0, "FLOE": 0.5}})  # fmt: skip
    with open_scene(data["scene"]) as scene:
        p0 = P.predict_scene(scene, load_model(str(raw)))
        p1 = P.predict_scene(scene, load_model(str(cal)))
        p2 = P.predict_scene(scene, load_model(str(cal)), calibrated=False)
    np.testing.assert_allclose(p1.probs["SOD"], apply_temperature(p0.probs["SOD"], 2.0), atol=1e-6)
    np.testing.assert_allclose(p1.probs["FLOE"], apply_temperature(p0.probs["FLOE"], 0.5), atol=1e-6)
    np.testing.assert_allclose(p2.probs["SOD"], p0.probs["SOD"], atol=1e-7)
    assert p1.temperature == {"SOD": 2.0, "FLOE": 0.5} and p2.temperature == {}
    assert (p1.lowres_classes()["SOD"] == p0.lowres_classes()["SOD"]).all()  # argmax unchanged


def test_fit_and_store_calibration(data: dict, tmp_path: Path) -> None:
    from icechart.infer.calibrate import calibrate

    ck = save_member(tmp_path / "m.safetensors", seed=4)
    path, cal = calibrate(str(ck), [data["scene"]])
    assert path == ck and set(cal["temperature"]) == {"SOD", "FLOE"}
    assert load_checkpoint(ck).meta["calibration"]["temperature"] == cal["temperature"]
    assert all(cal["nll_after"][c] <= cal["nll_before"][c] + 1e-9 for c in ("SOD", "FLOE"))
    # an ensemble's calibration goes into its manifest and changes its identity
    d = tmp_path / "ens"
    d.mkdir()
    for n, s in (("a", 1), ("b", 2)):
        save_member(d / f"{n}.safetensors", seed=s)
    mf = write_manifest(d / "ensemble.toml", ["a.safetensors", "b.safetensors"], model_id="tiny-ens")
    before = load_ensemble(mf).sha256
    _, cal = calibrate(str(d), [data["scene"]])
    ens = load_ensemble(mf)
    assert ens.model_id == "tiny-ens" and ens.sha256 != before
    assert ens.meta["calibration"]["temperature"] == pytest.approx(cal["temperature"])


def test_products_carry_uncertainty_only_from_ensembles(data: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    single, ens = tmp_path / "single", tmp_path / "ens"
    res = runner.invoke(cli, ["predict", str(data["scene"]), "-o", str(single), "--model",
                              str(data["dir"] / "a.safetensors"), "--formats", "netcdf", "--uncertainty-tif"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["predict", str(data["scene"]), "-o", str(ens), "--model", str(data["manifest"]),
                              "--formats", "netcdf", "--uncertainty-tif", "--tta"])  # fmt: skip
    assert res.exit_code == 0, res.output
    (nc1,) = single.glob("*.nc")
    (nc2,) = ens.glob("*.nc")
    with netCDF4.Dataset(nc1) as a:
        assert "SIC_standard_error" not in a.variables
        assert a["SIC"].ancillary_variables == "status_flag"
        assert a["SOD"].ancillary_variables == "SOD_confidence status_flag"
        assert a.ensemble_members == 1 and a.confidence_calibration == "none"
    with netCDF4.Dataset(nc2) as b:
        se = b["SIC_standard_error"]
        assert se.standard_name == "sea_ice_area_fraction standard_error" and se.units == "%"
        assert b["SIC"].ancillary_variables == "SIC_standard_error status_flag"
        assert b["FLOE"].ancillary_variables == "FLOE_confidence status_flag"
        assert b.ensemble_members == 2 and b.test_time_augmentation.startswith("flips")
        b.set_auto_maskandscale(False)
        v = se[:]
        sic = b["SIC"][:]
        assert ((v == 255) == (sic == 255)).all() and v[v != 255].max() <= 100
    assert {p.name.split("_", 3)[-1] for p in single.glob("*.tif")} == {"SOD_confidence.tif", "FLOE_confidence.tif"}
    assert len(list(ens.glob("*_SIC_standard_error.tif"))) == 1
    manifest = json.loads(next(ens.glob("*.manifest.json")).read_text())
    names = [p["name"] for p in manifest.get("files", manifest.get("products", []))]
    assert any(n.endswith("_SIC_standard_error.tif") for n in names)


def test_score_reports_ece_and_reliability_plot(data: dict, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(data["scene"]), "-o", str(out), "--model",
                                   str(data["manifest"]), "--formats", "netcdf"])  # fmt: skip
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["score", "--labels", str(data["scene"]), str(out), "--json",
                                   "--plots", str(tmp_path / "plots")])  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    cal = doc["calibration"]
    assert set(cal) == {"SOD", "FLOE"} and cal["SOD"]["n_bins"] == 15
    # the same ECE computed directly from the files
    with netCDF4.Dataset(next(out.glob("*.nc"))) as nc, open_scene(data["scene"]) as scene:
        nc.set_auto_maskandscale(False)
        ref = scene.labels("SOD")
        pred, conf = nc["SOD"][:], nc["SOD_confidence"][:]
    use = (ref != 255) & (pred != 255)
    direct = expected_calibration_error(conf[use] / 100.0, ref[use] == pred[use])
    assert cal["SOD"]["ece"] == pytest.approx(direct, abs=1e-12)
    assert (tmp_path / "plots" / "reliability.png").is_file()
    table = CliRunner().invoke(cli, ["score", "--labels", str(data["scene"]), str(out)])
    assert table.exit_code == 0 and "ECE" in table.output


def test_calibrate_cli(data: dict, tmp_path: Path) -> None:
    ck = save_member(tmp_path / "m.safetensors", seed=6)
    runner = CliRunner()
    res = runner.invoke(cli, ["calibrate", "--model", str(ck), "--labels", str(data["scene"])])
    assert res.exit_code == 0, res.output
    assert "SOD" in res.stdout and "FLOE" in res.stdout and "calibrated on 1 scene(s)" in res.stdout
    assert "calibration" in load_checkpoint(ck).meta
    res = runner.invoke(cli, ["calibrate", "--model", str(ck), "--labels", str(tmp_path / "nope.nc")])
    assert res.exit_code == 66 and "nope.nc: no such file or directory" in res.output
    unlabelled = tmp_path / "test.nc"
    write_scene(make_scene((60, 60), seed=8, labels=False), unlabelled)
    res = runner.invoke(cli, ["calibrate", "--model", str(ck), "--labels", str(unlabelled)])
    assert res.exit_code == 65 and "calibration needs labelled scenes" in res.output
    card = tmp_path / "card"
    card.mkdir()
    save_member(card / "model.safetensors", seed=7)
    (card / "model.toml").write_text('[model]\nid = "card-v1"\n')
    res = runner.invoke(cli, ["calibrate", "--model", str(card), "--labels", str(data["scene"])])
    assert res.exit_code == 78 and "-o FILE" in res.output
    res = runner.invoke(cli, ["calibrate", "--model", str(card), "--labels", str(data["scene"]),
                              "-o", str(tmp_path / "cal.safetensors"), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)["temperature"]) == {"SOD", "FLOE"}


def test_notebook_dataset_and_netcdf_agree_on_calibration(data: dict, tmp_path: Path) -> None:
    """icechart.predict() and the netCDF of the same model describe the confidence alike."""
    import icechart
    from icechart.products import write_products

    cal = save_member(tmp_path / "cal.safetensors", seed=1,
                      calibration={"method": "temperature", "temperature": {"SOD": 2.0, "FLOE": 0.5}})  # fmt: skip
    ds = icechart.predict(data["scene"], str(cal))
    model = load_model(str(cal))
    with open_scene(data["scene"]) as scene:
        (nc_path,) = write_products(P.predict_scene(scene, model), scene, tmp_path, formats="netcdf")
    with netCDF4.Dataset(nc_path) as nc:
        for chart in ("SOD", "FLOE"):
            v = f"{chart}_confidence"
            assert ds[v].attrs["comment"] == nc.variables[v].comment
            assert "temperature-scaled" in ds[v].attrs["comment"]
            np.testing.assert_array_equal(ds[v].values, nc.variables[v][:].filled(255))
        assert ds.attrs["confidence_calibration"] == nc.confidence_calibration == "temperature scaling: FLOE T=0.5000, SOD T=2.0000"
