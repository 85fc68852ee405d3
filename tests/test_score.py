"""AutoICE metrics equal scikit-learn's on random and adversarial cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, r2_score

from icechart import score as score_mod
from icechart.classes import FILL, N_CLASSES
from icechart.errors import BadDataError
from icechart.score import ScoreAccumulator, autoice_round, score_arrays


def _sk(ref: list[np.ndarray], pred: list[np.ndarray], chart: str) -> float:
    r = np.concatenate([a.ravel() for a in ref])
    p = np.concatenate([a.ravel() for a in pred])
    keep = r != FILL
    if chart == "SIC":
        return r2_score(r[keep].astype(float), p[keep].astype(float)) * 100
    return f1_score(r[keep], p[keep], average="weighted") * 100


def _random_pair(rng: np.random.Generator, shape: tuple[int, int], chart: str, noise: float):
    k = N_CLASSES[chart]
    ref = rng.integers(0, k, size=shape).astype(np.uint8)
    ref[rng.random(shape) < 0.2] = FILL
    pred = ref.copy()
    flip = rng.random(shape) < noise
    pred[flip] = rng.integers(0, k, size=int(flip.sum()))
    pred[rng.random(shape) < 0.02] = FILL  # prediction 255 inside labelled area is wrong
    return ref, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chart", ["SIC", "SOD", "FLOE"])
def test_random_several_scenes_pooled(seed: int, chart: str) -> None:
    rng = np.random.default_rng(seed)
    shapes = [(37, 41), (120, 110), (5, 300)]
    refs, preds = [], []
    acc = ScoreAccumulator((chart,))
    for i, shape in enumerate(shapes):
        r, p = _random_pair(rng, shape, chart, noise=0.3 + 0.2 * i)
        refs.append(r)
        preds.append(p)
        acc.update(chart, r, p, scene_id=f"2018010{i}T000000_dmi")
    res = acc.result()
    assert res.scores[chart] == pytest.approx(_sk(refs, preds, chart), abs=1e-6)
    # per-scene figures too
    for i, sid in enumerate(res.scenes):
        assert res.scene_scores(sid)[chart] == pytest.approx(
            _sk([refs[i]], [preds[i]], chart), abs=1e-6
        )


def test_row_blocks_match_single_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    r, p = _random_pair(rng, (64, 70), "SOD", noise=0.4)
    whole = score_arrays({"SOD": r}, {"SOD": p})
    monkeypatch.setattr(score_mod, "BLOCK_PIXELS", 97)
    blocked = score_arrays({"SOD": r}, {"SOD": p})
    assert np.array_equal(whole.charts["SOD"].confusion, blocked.charts["SOD"].confusion)
    assert blocked.scores["SOD"] == pytest.approx(_sk([r], [p], "SOD"), abs=1e-9)


@pytest.mark.parametrize("chart", ["SIC", "SOD", "FLOE"])
def test_single_class_reference(chart: str) -> None:
    ref = np.full((20, 30), 3, np.uint8)
    perfect = ref.copy()
    wrong = ref.copy()
    wrong[:5] = 1
    for pred in (perfect, wrong):
        res = score_arrays({chart: ref}, {chart: pred})
        assert res.scores[chart] == pytest.approx(_sk([ref], [pred], chart), abs=1e-6)


@pytest.mark.parametrize("chart", ["SIC", "SOD", "FLOE"])
def test_missing_classes_and_all_fill_regions(chart: str) -> None:
    rng = np.random.default_rng(11)
    ref = rng.integers(0, 2, size=(50, 50)).astype(np.uint8)  # only classes 0 and 1
    ref[:, :20] = FILL  # an all-255 region
    pred = rng.integers(0, N_CLASSES[chart], size=(50, 50)).astype(np.uint8)  # predicts absent ones
    pred[10:20, 25:] = FILL
    res = score_arrays({chart: ref}, {chart: pred})
    assert res.scores[chart] == pytest.approx(_sk([ref], [pred], chart), abs=1e-6)


def test_prediction_255_counts_as_wrong_and_raw_in_r2() -> None:
    ref = np.array([[0, 5, 10, 3]], np.uint8)
    pred = np.array([[0, 5, 10, FILL]], np.uint8)
    sod_ref = np.array([[0, 5, 1, 3]], np.uint8)
    sod_pred = np.array([[0, 5, 1, FILL]], np.uint8)
    res = score_arrays({"SIC": ref, "SOD": sod_ref}, {"SIC": pred, "SOD": sod_pred})
    assert res.scores["SIC"] == pytest.approx(_sk([ref], [pred], "SIC"), abs=1e-6)
    assert res.scores["SIC"] < 0  # the raw 255 enters R2, as sklearn on the raw arrays
    assert res.charts["SOD"].confusion[:, -1].sum() == 1
    assert res.scores["SOD"] == pytest.approx(_sk([sod_ref], [sod_pred], "SOD"), abs=1e-6)


def test_perfect_prediction_scores_100_and_combined() -> None:
    rng = np.random.default_rng(3)
    ref = {c: rng.integers(0, N_CLASSES[c], size=(30, 30)).astype(np.uint8) for c in N_CLASSES}
    res = score_arrays(ref, {c: a.copy() for c, a in ref.items()}, scene_id="x")
    assert res.scores == {"SIC": 100.0, "SOD": 100.0, "FLOE": 100.0, "combined": 100.0}
    assert res.autoice["combined"] == 100.0
    d = res.to_dict()
    json.dumps(d)
    assert set(d) >= {"SIC", "SOD", "FLOE", "combined", "autoice", "charts", "scenes"}
    assert d["charts"]["SOD"]["accuracy"] == 1.0
    assert d["charts"]["FLOE"]["f1_macro"] == 1.0


def test_autoice_rounding_as_challenge() -> None:
    # challenge: each chart np.round(x*100, 3); combined from rounded values, rounded again.
    scores = {"SIC": 91.23456, "SOD": 88.55551, "FLOE": 76.40049}
    out = autoice_round(scores)
    sic, sod, floe = np.round(91.23456, 3), np.round(88.55551, 3), np.round(76.40049, 3)
    assert out == {
        "SIC": sic,
        "SOD": sod,
        "FLOE": floe,
        "combined": np.round((sic * 2 + sod * 2 + floe * 1) / 5, 3),
    }


def test_autoice_matches_result_rounding() -> None:
    rng = np.random.default_rng(9)
    ref = {c: rng.integers(0, N_CLASSES[c], size=(40, 40)).astype(np.uint8) for c in N_CLASSES}
    pred = {c: rng.integers(0, N_CLASSES[c], size=(40, 40)).astype(np.uint8) for c in N_CLASSES}
    res = score_arrays(ref, pred)
    sk = {c: np.round(_sk([ref[c]], [pred[c]], c) / 100 * 100, 3) for c in N_CLASSES}
    for c in N_CLASSES:
        assert res.autoice[c] == pytest.approx(sk[c], abs=1e-9)


def test_no_labelled_pixels() -> None:
    ref = np.full((10, 10), FILL, np.uint8)
    with pytest.raises(BadDataError, match="no labelled pixels"):
        score_arrays({"SIC": ref}, {"SIC": ref})


def test_shape_mismatch_and_bad_values() -> None:
    acc = ScoreAccumulator()
    with pytest.raises(BadDataError, match="shape"):
        acc.update("SIC", np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))
    with pytest.raises(BadDataError, match="neither a class"):
        acc.update("SOD", np.full((2, 2), 7, np.uint8), np.zeros((2, 2), np.uint8))
    with pytest.raises(BadDataError, match="dtype"):
        acc.update("SOD", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32))


def test_scene_without_labels_for_one_chart() -> None:
    acc = ScoreAccumulator(("SOD",))
    acc.update("SOD", np.full((4, 4), FILL, np.uint8), np.zeros((4, 4), np.uint8), scene_id="a")
    acc.update("SOD", np.ones((4, 4), np.uint8), np.ones((4, 4), np.uint8), scene_id="b")
    res = acc.result()
    assert res.scene_scores("a")["SOD"] is None
    assert res.scene_scores("b")["SOD"] == 100.0
    json.dumps(res.to_dict())


def test_merge_accumulators() -> None:
    rng = np.random.default_rng(1)
    a, b = ScoreAccumulator(), ScoreAccumulator()
    refs, preds = [], []
    for i, acc in enumerate((a, b)):
        r, p = _random_pair(rng, (20, 25), "FLOE", 0.5)
        refs.append(r)
        preds.append(p)
        for c in N_CLASSES:
            acc.update(c, r % N_CLASSES[c] if c != "FLOE" else r, p, scene_id=str(i))
    a.add(b)
    assert a.result().scores["FLOE"] == pytest.approx(_sk(refs, preds, "FLOE"), abs=1e-6)
