"""Inference: features from the checkpoint, tiled forward pass, full-resolution blocks, masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import icechart
from icechart.classes import FILL, N_CLASSES
from icechart.errors import BadDataError, ModelError
from icechart.classes import STATUS_INVALID, STATUS_LAND, STATUS_OUTSIDE
from icechart.infer import decide as D
from icechart.infer import predict as P
from icechart.model.load import load_model, resolve_device
from icechart.io.contract import DEFAULT_CHANNELS
from icechart.io.scene import open_scene
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint

CHANNELS = list(DEFAULT_CHANNELS)


def save_tiny_model(path: Path, *, channels: list[str] = CHANNELS, sic_mode: str = "regression", seed: int = 0) -> Path:
    """A random-weights tiny U-Net checkpoint with the full input contract."""
    return random_checkpoint(path, channels=channels, sic_mode=sic_mode, seed=seed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("predict")
    ds = make_scene((153, 131), seed=11)
    scene = d / ds.attrs["scene_id"]
    write_scene(ds, scene)
    return {"scene": scene, "model": save_tiny_model(d / "tiny.safetensors"), "dir": d}


def test_predict_scene_lowres(tiny: dict) -> None:
    model = load_model(str(tiny["model"]))
    with open_scene(tiny["scene"]) as scene:
        pred = P.predict_scene(scene, model)
    assert pred.lowres_shape == (16, 14)
    assert pred.sic is not None and pred.sic.shape == (16, 14)
    for chart in ("SOD", "FLOE"):
        p = pred.probs[chart]
        assert p.shape == (N_CLASSES[chart], 16, 14)
        np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    cls = pred.lowres_classes()
    assert cls["SIC"].max() <= 10 and cls["SOD"].max() < 6 and cls["FLOE"].max() < 7
    assert pred.model_id.startswith("ckpt-") and len(pred.model_sha256) == 64


def test_tiled_forward_runs_and_blends(tiny: dict) -> None:
    model = load_model(str(tiny["model"]))
    with open_scene(tiny["scene"]) as scene:
        whole = P.predict_scene(scene, model, tile_size=None)
        tiled = P.predict_scene(scene, model, tile_size=8, overlap=4)
    for chart in ("SOD", "FLOE"):
        np.testing.assert_allclose(tiled.probs[chart].sum(axis=0), 1.0, atol=1e-5)
    # Same network, other context at tile borders only: most decisions agree.
    agree = (whole.lowres_classes()["SOD"] == tiled.lowres_classes()["SOD"]).mean()
    assert agree > 0.5


def test_classification_head(tiny: dict) -> None:
    path = save_tiny_model(tiny["dir"] / "cls.safetensors", sic_mode="classification")
    model = load_model(str(path))
    with open_scene(tiny["scene"]) as scene:
        pred = P.predict_scene(scene, model)
        blocks = list(pred.blocks(scene, block_rows=50))
    assert pred.sic is None and pred.probs["SIC"].shape[0] == 11
    sic = np.concatenate([b.charts["SIC"] for b in blocks])
    assert set(np.unique(sic)) <= set(range(11)) | {FILL}


def _naive_upsample(pred: P.Prediction, chart: str) -> tuple[np.ndarray, np.ndarray]:
    """All-class bilinear upsampling then the decision (D.ice_consistent: open water where
    SIC is 0, else the argmax over the ice classes): what blocks() must equal."""
    rc, cc = pred.centres()
    rows = D.Axis.build(np.arange(pred.shape[0], dtype=np.float64), rc)
    cols = D.Axis.build(np.arange(pred.shape[1], dtype=np.float64), cc)
    p = np.stack([D.bilinear(torch.from_numpy(pk), rows, cols).numpy() for pk in pred.probs[chart]])
    assert pred.sic is not None
    water = np.rint(np.clip(D.bilinear(torch.from_numpy(pred.sic), rows, cols).numpy(), 0, 10)) == 0
    cls = np.where(water, 0, p[1:].argmax(axis=0) + 1).astype(np.uint8)
    prob = np.take_along_axis(p, cls[None].astype(np.intp), axis=0)[0]
    return cls, np.rint(100 * prob).astype(np.uint8)


def test_blocks_equal_full_bilinear_decision(tiny: dict) -> None:
    model = load_model(str(tiny["model"]))
    with open_scene(tiny["scene"]) as scene:
        pred = P.predict_scene(scene, model)
        blocks = list(pred.blocks(scene, block_rows=40))
        valid = scene.valid()
        land = scene.land()
    assert [b.rows.start for b in blocks] == [0, 40, 80, 120]
    status = np.concatenate([b.status for b in blocks])
    charted = status == 0
    for chart in ("SOD", "FLOE"):
        got = np.concatenate([b.charts[chart] for b in blocks])
        conf = np.concatenate([b.confidence[chart] for b in blocks])
        ref, ref_conf = _naive_upsample(pred, chart)
        np.testing.assert_array_equal(got[charted], ref[charted])
        assert np.abs(conf[charted].astype(int) - ref_conf[charted]).max() <= 1
        assert (got[~charted] == FILL).all() and (conf[~charted] == FILL).all()
    sic = np.concatenate([b.charts["SIC"] for b in blocks])
    assert set(np.unique(sic[charted])) <= set(range(11))
    # 255 exactly where the SAR is invalid or on land; flags say which
    assert np.array_equal(~charted, ~valid | land)
    assert np.array_equal((status & STATUS_INVALID) != 0, ~valid)
    assert np.array_equal((status & STATUS_LAND) != 0, land)
    assert ((status & STATUS_OUTSIDE) != 0).sum() > 0  # the synthetic NaN swath borders
    assert not ((status & STATUS_OUTSIDE) != 0)[valid].any()


def test_status_outside_swath_vs_inner_gap() -> None:
    class FakeScene:
        def valid(self, window: object) -> np.ndarray:
            v = np.ones((3, 8), bool)
            v[:, :2] = False  # swath border
            v[1, 4] = False  # a hole inside the swath
            v[2, :] = False  # a line with no data at all
            return v

        def land(self, window: object) -> np.ndarray:
            return np.zeros((3, 8), bool)

    s = P.scene_status(FakeScene(), slice(0, 3))  # type: ignore[arg-type]
    assert s[0, 0] == STATUS_INVALID | STATUS_OUTSIDE
    assert s[1, 4] == STATUS_INVALID
    assert (s[2] == STATUS_INVALID | STATUS_OUTSIDE).all()
    assert s[0, 5] == 0


def test_scene_lacking_model_channels_is_65(tiny: dict) -> None:
    ds = make_scene((60, 50), seed=2).drop_vars(["btemp_18_7h", "tclw"])
    path = tiny["dir"] / ds.attrs["scene_id"]
    write_scene(ds, path)
    model = load_model(str(tiny["model"]))
    with open_scene(path) as scene, pytest.raises(BadDataError) as err:
        P.predict_scene(scene, model)
    assert err.value.exit_code == 65
    assert "btemp_18_7h" in err.value.message and "tclw" in err.value.message


def test_model_errors(tiny: dict) -> None:
    with pytest.raises(ModelError):
        load_model(str(tiny["dir"] / "nope.safetensors"))
    bad = tiny["dir"] / "corrupt.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError) as err:
        load_model(str(bad))
    assert err.value.exit_code == 69


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_69() -> None:
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelError, match="no CUDA device"):
        resolve_device("cuda")


def test_predict_dataset_for_notebooks(tiny: dict) -> None:
    ds = icechart.predict(tiny["scene"], tiny["model"])
    assert dict(ds.sizes) == {"sar_lines": 153, "sar_samples": 131}
    for name in ("SIC", "SOD", "FLOE", "SOD_confidence", "FLOE_confidence", "status_flag"):
        assert ds[name].dtype == np.uint8
    sic = ds.SIC.values
    assert set(np.unique(sic)) <= set(range(0, 101, 10)) | {FILL}
    assert ((sic == FILL) == (ds.status_flag.values != 0)).all()
    assert ds.lat.dtype == np.float32 and np.isfinite(ds.lat.values).all()
    with open_scene(tiny["scene"]) as scene:
        lat, lon = scene.latlon()
    assert np.abs(ds.lat.values - lat).max() < 1e-4 and np.abs(ds.lon.values - lon).max() < 1e-4
    assert ds.attrs["model_id"].startswith("ckpt-")
    # the netCDF's time coordinate and footprint too
    assert ds.time.values == np.datetime64(ds.attrs["time_coverage_start"][:19], "ns")
    assert ds.attrs["geospatial_bounds"].startswith("POLYGON") and "NOT FOR NAVIGATION" in ds.attrs["comment"]


def test_registry_default_model(tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped model found through the registry gets its registry id; checksums verified."""
    import shutil

    from icechart.model import registry as models
    from icechart.hashing import sha256_file

    root = tmp_path / "models"
    mdir = root / "tiny-v1"
    mdir.mkdir(parents=True)
    shutil.copy(tiny["model"], mdir / "model.safetensors")
    sha = sha256_file(mdir / "model.safetensors")
    (mdir / "model.toml").write_text(f'[model]\nid = "tiny-v1"\nweights = "model.safetensors"\nsha256 = "{sha}"\n')
    (root / "registry.toml").write_text('default = "tiny-v1"\n[models."tiny-v1"]\ndescription = "test"\n')
    monkeypatch.setenv(models.ENV_DIR, str(root))
    assert models.default_model_id() == "tiny-v1"
    assert models.resolve_model(None) == mdir
    assert models.resolve_model("tiny-v1") == mdir
    m = load_model(None)
    assert m.model_id == "tiny-v1" and m.sha256 == sha
    with pytest.raises(ModelError, match="unknown model 'other'"):
        models.resolve_model("other")
    (mdir / "model.toml").write_text(f'[model]\nid = "tiny-v1"\nsha256 = "{"0" * 64}"\n')
    with pytest.raises(ModelError, match="sha256"):
        load_model("tiny-v1")


def test_no_default_model_is_69(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icechart.model import registry as models

    (tmp_path / "registry.toml").write_text("# nothing shipped\n")
    monkeypatch.setenv(models.ENV_DIR, str(tmp_path))
    with pytest.raises(ModelError, match="--model"):
        models.default_model_id()


def test_source_tree_registry_holds_the_shipped_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ICECHART_MODELS_DIR or a packaged copy, the registry is the checkout's models/
    (what `make demo` uses): it names a default whose model card exists."""
    from icechart.model import registry as models

    monkeypatch.delenv(models.ENV_DIR, raising=False)
    root = models.models_root()
    if root.name == "_models":  # an installed wheel: its packaged copy is the registry
        pytest.skip("packaged registry")
    assert root == Path(__file__).resolve().parents[1] / "models"
    default = models.load_registry(root)["default"]
    assert (root / default / "model.toml").is_file()
