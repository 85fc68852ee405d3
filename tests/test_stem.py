"""Texture inputs and the learned downscaling stem: training and prediction see the same inputs,
the stem has no seams between bands, and a stem network trains and predicts end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from icechart.features import full_resolution_sar, output_shape
from icechart.infer.forward import scene_features
from icechart.io import contract as C
from icechart.io.scene import open_scene
from icechart.model.checkpoint import LoadedModel
from icechart.model.contract import ModelContract
from icechart.model.stem import scene_stem_channels, stem_channels, with_stem
from icechart.model.unet import build_net
from icechart.synth import make_scene, write_scene
from icechart.train import load_train_config
from icechart.training.data import PatchSampler, load_scene

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"
TEXTURE_SET = ["nersc_sar_primary", "hh_std", "hh_lag1", "hv_lag4", "hv_bright", "month"]


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("stem") / "20210315T101010_dmi_prep.nc"
    write_scene(make_scene((157, 143), seed=31), p)
    return p


def _stem_model(factor: int = 5, stem: int = 3) -> LoadedModel:
    torch.manual_seed(0)
    net = build_net({"in_channels": 2, "filters": [4, 8], "stem": stem, "stem_factor": factor}).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is not the identity
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    meta = {
        "channels": [C.PRIMARY, "month"],
        "factor": factor,
        "arch": net.arch,
        "norm": {"mean": [0.0, 0.0] + [0.0] * stem, "std": [1.0, 1.0] + [1.0] * stem},
        "stem_norm": {"mean": [0.1, -0.2], "std": [1.3, 0.9]},
    }
    return LoadedModel(net=net, meta=meta, model_id="stem-test", sha256="0" * 64, path=Path("."))


def test_stem_has_no_seams_between_bands(scene_path: Path) -> None:
    model = _stem_model()
    with open_scene(scene_path) as s:
        whole = stem_channels(model.net, full_resolution_sar(s), model.meta["stem_norm"])
        for blocks in (1, 4, 7):
            banded = scene_stem_channels(model, s, band_blocks=blocks)
            np.testing.assert_allclose(banded, whole, rtol=0, atol=1e-5)
        assert whole.shape == (3, *output_shape(s.shape, 5))


def test_stem_output_depends_only_on_its_block(scene_path: Path) -> None:
    """Changing SAR pixels of one block changes that output pixel and no other."""
    model = _stem_model()
    with open_scene(scene_path) as s:
        full = full_resolution_sar(s)
    a = stem_channels(model.net, full, model.meta["stem_norm"])
    full2 = full.copy()
    full2[:, 50:55, 60:65] += 3.0
    b = stem_channels(model.net, full2, model.meta["stem_norm"])
    diff = np.abs(a - b).max(axis=0) > 1e-6
    assert diff[10, 12] and diff.sum() == 1


def test_training_and_prediction_see_the_same_stem_input(scene_path: Path, tmp_path: Path) -> None:
    """The patch sampler's full-resolution SAR and the prediction path's give identical stem
    channels for the same area (fails if the training cache and prediction diverge)."""
    cfg = load_train_config(TINY, overrides=["stem=3", "factor=5", "patch_size=8"])
    (tmp_path / "cache").mkdir()
    sd = load_scene(scene_path, cfg, tmp_path / "cache", full_labels=False)
    model = _stem_model(factor=5)
    with open_scene(scene_path) as s:
        pred = scene_stem_channels(model, s, band_blocks=4)
    sampler = PatchSampler([sd], patch=8, min_labelled=0.0, seed=3, stem_factor=5)
    h, w = sd.y.shape[1:]
    for k in range(5):
        rng = np.random.default_rng(k)  # replay the sampler's draws on a twin generator
        rng.integers(1)
        r, c = int(rng.integers(0, h - 8 + 1)), int(rng.integers(0, w - 8 + 1))
        x, y, full = sampler._one(np.random.default_rng(k))
        assert full is not None and full.shape == (2, 40, 40)
        np.testing.assert_array_equal(np.asarray(sd.x[:, r : r + 8, c : c + 8]), x)
        train_side = stem_channels(model.net, full, model.meta["stem_norm"])
        np.testing.assert_allclose(train_side, pred[:, r : r + 8, c : c + 8], atol=1e-5)


def test_texture_channels_same_in_training_cache_and_prediction(scene_path: Path, tmp_path: Path) -> None:
    """The cached training stack and the prediction path's (row bands) are identical."""
    cfg = load_train_config(TINY, overrides=[f"channels={TEXTURE_SET!r}".replace("'", '"'), "factor=5"])
    (tmp_path / "cache").mkdir()
    sd = load_scene(scene_path, cfg, tmp_path / "cache", full_labels=False)
    meta = {"channels": TEXTURE_SET, "factor": 5, "downscale_method": "mean", "interp": "bilinear"}
    import icechart.infer.forward as P

    old = P._FEATURE_BAND
    P._FEATURE_BAND = 7  # many bands, none aligned with the cache's row blocks
    try:
        with open_scene(scene_path) as s:
            pred = scene_features(s, ModelContract.from_meta(meta), normalised=False)
    finally:
        P._FEATURE_BAND = old
    np.testing.assert_array_equal(np.isnan(pred), np.isnan(np.asarray(sd.x)))
    np.testing.assert_allclose(pred, np.asarray(sd.x), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert np.isfinite(pred[1:5]).mean() > 0.8


def test_with_stem_appends_channels(scene_path: Path) -> None:
    model = _stem_model()
    with open_scene(scene_path) as s:
        raw = scene_features(s, ModelContract.from_meta({**model.meta, "norm": None}), normalised=False)
        x = with_stem(model, raw, scene=s)
        y = with_stem(model, raw, full=full_resolution_sar(s))
    assert x.shape == (raw.shape[0] + 3, *raw.shape[1:])
    np.testing.assert_allclose(x, y, atol=1e-5, equal_nan=True)
    plain = dataclasses.replace(model, meta={**model.meta, "arch": {"in_channels": 2}})
    assert with_stem(plain, raw) is raw


def test_forward_full_equals_forward_on_appended_channels() -> None:
    torch.manual_seed(1)
    net = build_net({"in_channels": 3, "filters": [4, 8], "stem": 2, "stem_factor": 4}).eval()
    x = torch.randn(1, 3, 12, 10)
    full = torch.randn(1, 2, 47, 38)  # partial edge blocks: zero padded to 48 x 40
    a = net.forward_full(x, full)
    b = net(torch.cat([x, net.run_stem(full)], dim=1))
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert net.run_stem(full).shape == (1, 2, 12, 10)
    assert build_net(net.arch).arch == net.arch


def test_stem_network_trains_and_predicts_end_to_end(tmp_path: Path) -> None:
    """`icechart train --set stem=N` through the DataLoader batches, calibration and checkpoint
    checks, then prediction band by band."""
    from icechart.model.load import load_model
    from icechart.training.loop import train

    (tmp_path / "s").mkdir()
    for k in range(3):
        write_scene(make_scene((90, 80), seed=300 + k), tmp_path / "s" / f"2021031{k}T101010_dmi_prep.nc")
    cfg = load_train_config(TINY, overrides=["stem=3"]).replace(data=str(tmp_path / "s"), out=str(tmp_path / "run"))
    train(cfg, progress=False)
    model = load_model(tmp_path / "run")
    assert model.meta["arch"]["stem"] == 3 and len(model.meta["norm"]["mean"]) == len(cfg.channels) + 3
    assert "calibration" in model.meta and "stem_norm" in model.meta
    from icechart.infer.predict import predict_scene

    with open_scene(tmp_path / "s" / "20210310T101010_dmi_prep.nc") as s:
        pred = predict_scene(s, model)
        assert pred.probs["SOD"].shape[1:] == output_shape(s.shape, cfg.factor)
