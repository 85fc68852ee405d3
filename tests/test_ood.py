"""Out-of-distribution inputs: the training range stored with the model, the status bit and the
lowered confidence on a scene built outside it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from icechart.classes import STATUS_MASKED, STATUS_OOD
from icechart.features import build_features, raw_features
from icechart.infer.predict import predict_scene
from icechart.model.load import load_model
from icechart.io import contract as C
from icechart.io.scene import open_scene
from icechart.ood import OOD_MARGIN, excess, input_range, soften
from icechart.synth import Physics, make_scene, write_scene
from icechart.testing import random_checkpoint

CHANNELS = [C.PRIMARY, C.SECONDARY, "hh_std", "btemp_18_7h", "u10m_rotated", "month", "lat", "lon"]


def _write(d: Path, name: str, **kw) -> Path:
    p = d / f"{name}_dmi_prep.nc"
    write_scene(make_scene((120, 110), **kw), p)
    return p


@pytest.fixture(scope="module")
def model_and_scenes(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("ood")
    march = datetime(2021, 3, 15, tzinfo=timezone.utc)
    train = [_write(d, f"2021031{k}T000000", seed=70 + k, time=march, physics=Physics(wind=6.0)) for k in range(3)]
    norm = {"mean": [0.0] * len(CHANNELS), "std": [1.0] * len(CHANNELS)}
    stacks = []
    for p in train:
        with open_scene(p) as s:
            stacks.append(raw_features(s, CHANNELS, factor=5))
    from icechart.features import norm_from_stacks

    norm = norm_from_stacks(stacks, CHANNELS)
    rng = input_range(stacks, norm)
    ckpt = random_checkpoint(d / "m.safetensors", channels=CHANNELS, factor=5, filters=(4, 8),
                             extra_meta={"norm": norm, "input_range": rng})
    inside = _write(d, "20210320T000000", seed=90, time=march, physics=Physics(wind=6.0))
    # outside: far north, in July, in a gale (location, month and wind all beyond training)
    outside = _write(d, "20210715T000000", seed=91, center=(86.0, 40.0), time=datetime(2021, 7, 15, tzinfo=timezone.utc),
                     physics=Physics(wind=25.0))
    return load_model(ckpt), inside, outside, rng


def test_range_is_stored_per_channel(model_and_scenes) -> None:
    _, _, _, rng = model_and_scenes
    assert len(rng["lo"]) == len(rng["hi"]) == len(CHANNELS)
    assert all(lo <= hi for lo, hi in zip(rng["lo"], rng["hi"]))
    assert rng["margin"] == OOD_MARGIN


def test_scene_outside_the_training_range_is_flagged(model_and_scenes) -> None:
    model, inside, outside, _ = model_and_scenes
    shares, confs = {}, {}
    for name, p in (("inside", inside), ("outside", outside)):
        with open_scene(p) as s:
            pred = predict_scene(s, model)
            st = np.concatenate([b.status for b in pred.blocks(s)])
            conf = np.concatenate([b.confidence["SOD"] for b in pred.blocks(s)])
        charted = (st & STATUS_MASKED) == 0
        shares[name] = float(((st & STATUS_OOD) != 0)[charted].mean())
        confs[name] = conf[charted & ((st & STATUS_OOD) != 0)]
        assert not ((st & STATUS_OOD) != 0)[~charted].any()  # masked pixels carry no OOD bit
    assert shares["inside"] < 0.02
    assert shares["outside"] > 0.95
    # lowered confidence: at most (1 - 0.25) + 0.25 / 6 = 79 % for SOD at flagged pixels
    assert confs["outside"].max() <= 79


def test_soften_keeps_decisions_and_lowers_confidence() -> None:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(6), size=(4, 5)).transpose(2, 0, 1).astype(np.float32)
    d = np.array([[0, 0.5, 1.0, 1.01, 2.0]] * 4, np.float32)
    q = soften({"SOD": p}, d)["SOD"]
    np.testing.assert_array_equal(q.argmax(axis=0), p.argmax(axis=0))
    np.testing.assert_allclose(q.sum(axis=0), 1, rtol=1e-5)
    np.testing.assert_array_equal(q[:, :, :3], p[:, :, :3])  # within the margin: untouched
    assert (q.max(axis=0)[:, 3:] < p.max(axis=0)[:, 3:]).all()


def test_excess_in_standard_deviations() -> None:
    x = np.zeros((2, 1, 3), np.float32)
    x[0, 0] = [0.0, 3.0, -2.5]
    x[1, 0] = [0.5, 0.0, 0.0]
    d = excess(x, {"lo": [-1.0, -1.0], "hi": [1.0, 0.0]})
    np.testing.assert_allclose(d[0], [0.5, 2.0, 1.5])


def test_training_stores_the_range(tmp_path: Path) -> None:
    from icechart.model.checkpoint import load_checkpoint
    from icechart.train import load_train_config
    from icechart.training.loop import train

    (tmp_path / "s").mkdir()
    for k in range(3):
        write_scene(make_scene((90, 80), seed=200 + k), tmp_path / "s" / f"2021031{k}T101010_dmi_prep.nc")
    cfg = load_train_config(Path(__file__).parent / "conf" / "train_tiny.toml").replace(
        data=str(tmp_path / "s"), out=str(tmp_path / "run"), epochs=1, calibrate=False)
    train(cfg, progress=False)
    meta = load_checkpoint(tmp_path / "run" / "best.safetensors").meta
    assert len(meta["input_range"]["lo"]) == len(cfg.channels)
    with open_scene(tmp_path / "s" / "20210310T101010_dmi_prep.nc") as s:
        x = build_features(s, cfg.channels, factor=cfg.factor, norm=meta["norm"])
    assert float(excess(x, meta["input_range"]).max()) <= OOD_MARGIN  # a training scene is inside
