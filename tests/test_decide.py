"""The one decision rule (icechart.infer.decide): products and validation decide alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from icechart.classes import CHARTS, N_CLASSES
from icechart.errors import BadDataError
from icechart.features import pixel_centres
from icechart.infer.decide import Upsampler, lowres_classes, sic_classes
from icechart.infer.forward import scene_features
from icechart.infer.predict import predict_scene
from icechart.io.scene import open_scene
from icechart.model.load import load_model
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint
from icechart.training.validate import predict_scene_outputs, validation_charts


@pytest.fixture(scope="module")
def scene_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("decide")
    ds = make_scene((143, 121), seed=7)
    path = d / ds.attrs["scene_id"]
    write_scene(ds, path)
    return path


@pytest.mark.parametrize("sic_mode", ["regression", "classification"])
def test_validation_and_products_give_identical_classes(scene_path: Path, tmp_path: Path, sic_mode: str) -> None:
    model = load_model(random_checkpoint(tmp_path / "m.safetensors", sic_mode=sic_mode, seed=3))
    c = model.contract
    with open_scene(scene_path) as scene:
        pred = predict_scene(scene, model, tile_size=None)
        blocks = list(pred.blocks(scene, block_rows=50))
        raw = scene_features(scene, c, normalised=False)
        shape = scene.shape
    out = predict_scene_outputs(model.net, raw, c.norm, device=torch.device("cpu"))
    val = list(validation_charts(out, shape, factor=c.factor, method=c.downscale_method, sic_mode=sic_mode, block_rows=64))
    assert [r.start for r, _ in val] == [0, 64, 128]
    charted = np.concatenate([b.status for b in blocks]) == 0
    assert charted.mean() > 0.5
    for chart in CHARTS:
        product = np.concatenate([b.charts[chart] for b in blocks])
        validation = np.concatenate([v[chart].numpy() for _, v in val])
        assert product.shape == validation.shape == shape
        np.testing.assert_array_equal(product[charted], validation[charted])
    # and at class boundaries the rule interpolates probabilities, not logits
    sod_logits = out["SOD"].numpy()
    assert not np.allclose(sod_logits, pred.probs["SOD"])


def _centres(shape: tuple[int, int], factor: int) -> tuple[np.ndarray, np.ndarray]:
    return pixel_centres(shape[0], factor, "mean"), pixel_centres(shape[1], factor, "mean")


def _probs(h: int, w: int) -> dict[str, np.ndarray]:
    out = {}
    for chart in ("SOD", "FLOE"):
        p = np.zeros((N_CLASSES[chart], h, w), np.float32)
        p[1] = 1.0
        out[chart] = p
    return out


def test_sic_is_clamped_and_rounded_at_full_resolution() -> None:
    """Regression outside 0..10 is clamped before rounding at every SAR pixel (not wrapped)."""
    sic = np.array([[-3.0, 14.0], [4.6, 4.4]], np.float32)
    up = Upsampler(sic, _probs(2, 2), _centres((20, 20), 10), (20, 20))
    (rows, classes, _conf), = list(up.blocks(20))
    full = classes["SIC"]
    assert rows == slice(0, 20)
    assert full[0, 0] == 0 and full[0, -1] == 10  # the corners take the corner values
    assert full[-1, 0] == 5 and full[-1, -1] == 4  # round, not truncate
    assert full.max() == 10 and full.min() == 0
    np.testing.assert_array_equal(lowres_classes(sic, {})["SIC"], [[0, 10], [5, 4]])
    np.testing.assert_array_equal(sic_classes(np.array([2.5, 3.5, -0.4, 10.4])), [2, 4, 0, 10])


def test_validation_rounds_sic_like_products() -> None:
    """Validation's SIC is round(clamp(regression)): 4.6 -> 5, 4.4 -> 4, -2 -> 0, 12 -> 10."""
    h, w = 3, 4
    for value, expected in ((4.6, 5), (4.4, 4), (-2.0, 0), (12.0, 10)):
        out = {"SIC": torch.full((1, h, w), value)}
        out["SOD"] = torch.zeros((N_CLASSES["SOD"], h, w))
        out["FLOE"] = torch.zeros((N_CLASSES["FLOE"], h, w))
        (_, classes), = list(validation_charts(out, (30, 40), factor=10, method="mean", sic_mode="regression"))
        assert (classes["SIC"] == expected).all(), (value, classes["SIC"].unique())



def test_tensor_inputs_decide_like_numpy_and_ties_go_to_the_first_class() -> None:
    """One rule for both callers: tensors in (validation) give the numpy path's bytes (products)."""
    rng = np.random.default_rng(3)
    shape = (57, 64)
    centres = _centres(shape, 5)
    h, w = centres[0].size, centres[1].size
    probs = {}
    for chart in ("SOD", "FLOE"):
        p = rng.integers(0, 3, (N_CLASSES[chart], h, w)).astype(np.float32)  # many exact ties
        p /= np.maximum(p.sum(0), 1)
        probs[chart] = p
    sic = rng.normal(2, 4, (h, w)).astype(np.float32)
    with_np = list(Upsampler(sic, probs, centres, shape).blocks(20))
    with_t = list(Upsampler(torch.from_numpy(sic), {c: torch.from_numpy(p) for c, p in probs.items()}, centres, shape).blocks(20))
    for (r1, c1, q1), (r2, c2, q2) in zip(with_np, with_t):
        assert r1 == r2 and isinstance(c1["SOD"], np.ndarray) and isinstance(c2["SOD"], torch.Tensor)
        for k in c1:
            np.testing.assert_array_equal(c1[k], c2[k].numpy())
        for k in q1:
            np.testing.assert_array_equal(q1[k], q2[k].numpy())
    tie = np.zeros((6, 2, 2), np.float32)
    tie[2] = tie[4] = 0.5
    low = lowres_classes(np.full((2, 2), 5.0, np.float32), {"SOD": tie})
    assert (low["SOD"] == 2).all()  # the first of the tied ice classes, as numpy's argmax
    ((_, full, conf),) = list(Upsampler(np.full((2, 2), 5.0, np.float32), {"SOD": tie}, _centres((10, 10), 5), (10, 10)).blocks(10))
    assert (full["SOD"] == 2).all() and (conf["SOD"] == 50).all()


def test_validation_scores_on_the_device_equal_host_scoring(scene_path: Path, tmp_path: Path) -> None:
    """score_outputs (pairs counted where the outputs are, R2 sums from the table) equals
    ScoreAccumulator.update on the same charts, per scene and pooled."""
    from icechart.score import ScoreAccumulator
    from icechart.training.validate import score_outputs

    model = load_model(random_checkpoint(tmp_path / "m.safetensors", seed=5))
    c = model.contract
    with open_scene(scene_path) as scene:
        raw = scene_features(scene, c, normalised=False)
        labels = np.stack([np.asarray(scene.labels(ch)) for ch in CHARTS])
    out = predict_scene_outputs(model.net, raw, c.norm, device=torch.device("cpu"))
    kw = dict(factor=c.factor, method=c.downscale_method, sic_mode="regression")
    host = ScoreAccumulator()
    for rows, pred in validation_charts(out, labels.shape[1:], block_rows=40, **kw):
        for k, chart in enumerate(CHARTS):
            host.update(chart, labels[k, rows], pred[chart].numpy(), scene_id="s")
    dev = ScoreAccumulator()
    score_outputs(dev, out, labels, scene_id="s", block_rows=33, **kw)
    a, b = host.result(), dev.result()
    assert a.scores == b.scores and a.autoice == b.autoice
    for chart in CHARTS:
        sa, sb = a.charts[chart], b.charts[chart]
        assert (sa.n, sa.sum_y, sa.sum_y2, sa.sum_res2) == (sb.n, sb.sum_y, sb.sum_y2, sb.sum_res2)
        np.testing.assert_array_equal(sa.confusion, sb.confusion)
    assert a.scene_scores("s") == b.scene_scores("s")
    bad = labels.copy()
    bad[1, 0, 0] = 17  # neither a SOD class nor 255
    with pytest.raises(BadDataError, match="SOD reference"):
        score_outputs(ScoreAccumulator(), out, bad, scene_id="s", **kw)
