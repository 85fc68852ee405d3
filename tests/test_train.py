"""Training: the real `icechart train` entry point on CPU with a tiny config, resume, errors,
--runs, presets, augmentation, loss, the cache and DDP (gloo, 2 processes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from icechart.classes import FILL
from icechart.cli.main import cli
from icechart.model.checkpoint import load_checkpoint
from icechart.synth import make_scene, write_scene
from icechart.testing import labelled_scenes
from icechart.train import load_train_config, preset_names
from icechart.training.augment import AugmentSpec, augment_batch
from icechart.training.loss import multitask_loss

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_scenes(tmp_path_factory.mktemp("scenes"), shape=(90, 80), seed=100)


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["train", *args])
    return res.exit_code, res.output + (res.stderr if hasattr(res, "stderr") else "")


def test_smoke_train_cli(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out))
    assert code == 0, text
    assert "combined" in text and "baseline" in text
    for name in ("best.safetensors", "last.pt", "metrics.jsonl", "split.json", "summary.json", "config.json"):
        assert (out / name).is_file(), name
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]["val"]) == {"SIC", "SOD", "FLOE", "combined"}
    split = json.loads((out / "split.json").read_text())
    assert len(split["val"]) == 1 and len(split["train"]) == 2
    m = load_checkpoint(out)
    assert m.meta["channels"][0] == "nersc_sar_primary" and m.meta["factor"] == 4
    assert m.meta["trained_on"] == split["train_ids"]
    assert len(m.meta["norm"]["mean"]) == 7
    # the cache was built once and is reused by the next run
    cache = tmp_path / ".icechart-cache"
    stamps = {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(tmp_path / "run2"), "--epochs", "1")
    assert code == 0, text
    assert {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")} == stamps  # the .json: last use


def test_existing_run_is_not_overwritten_silently(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--epochs", "1")[0] == 0
    before = (out / "best.safetensors").stat().st_mtime_ns
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--epochs", "1")
    assert code == 73 and "previous run" in text and "--overwrite" in text
    assert (out / "best.safetensors").stat().st_mtime_ns == before
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--epochs", "1", "--overwrite")
    assert code == 0, text


def test_resume_continues_identically(scenes: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run("--config", str(TINY), "--data", str(scenes), "-o", str(a))[0] == 0
    assert _run("--config", str(TINY), "--data", str(scenes), "-o", str(b), "--epochs", "1")[0] == 0
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(b), "--resume")
    assert code == 0, text
    sa = torch.load(a / "last.pt", weights_only=True)
    sb = torch.load(b / "last.pt", weights_only=True)
    assert sa["epoch"] == sb["epoch"] == 2
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"]
    assert sa["rng"] == sb["rng"]  # the streams derive from (seed, rank, epoch, batch)
    ma = [json.loads(l) for l in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (b / "metrics.jsonl").read_text().splitlines()]
    assert [r["train_loss"] for r in ma] == [r["train_loss"] for r in mb]


def test_resume_incompatible_and_corrupt(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--epochs", "1")[0] == 0
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--resume", "--set", "filters=[4, 4]")
    assert code == 78 and "cannot resume" in text and "filters" in text
    (out / "last.pt").write_bytes(b"garbage")
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--resume")
    assert code == 69 and "corrupt" in text
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(tmp_path / "none"), "--resume")
    assert code == 69 and "nothing to resume" in text


def test_bad_inputs(scenes: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, text = _run("--config", str(TINY), "--data", str(empty), "-o", str(tmp_path / "o1"))
    assert code == 66 and "no training scenes" in text

    code, text = _run("--config", str(TINY), "--data", str(scenes), "--set", "epoch=3")
    assert code == 78 and "unknown key `epoch`" in text and "did you mean `epochs`" in text

    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.read_text().replace("factor = 4", "factr = 4"))
    code, text = _run("--config", str(bad), "--data", str(scenes))
    assert code == 78 and "factr" in text and "factor" in text

    code, text = _run("--config", "no-such-preset", "--data", str(scenes))
    assert code == 66 and "no-such-preset" in text

    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(blocker / "run"))
    assert code == 73 and "not writable" in text

    nolab = tmp_path / "nolab"
    nolab.mkdir()
    write_scene(make_scene((60, 60), seed=1, labels=False), nolab / "20210101T000000_dmi_prep.nc")
    write_scene(make_scene((60, 60), seed=2), nolab / "20210102T000000_dmi_prep.nc")
    code, text = _run("--config", str(TINY), "--data", str(nolab), "-o", str(tmp_path / "o2"), "--set", "n_val=0")
    assert code == 65 and "20210101T000000_dmi" in text and "no labels" in text

    nochan = tmp_path / "nochan"
    nochan.mkdir()
    write_scene(make_scene((60, 60), seed=3).drop_vars("t2m"), nochan / "20210103T000000_dmi_prep.nc")
    code, text = _run("--config", str(TINY), "--data", str(nochan), "-o", str(tmp_path / "o3"), "--set", "n_val=0")
    assert code == 65 and "20210103T000000_dmi" in text and "t2m" in text


def test_runs_and_ensemble(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "multi"
    code, text = _run("--config", str(TINY), "--data", str(scenes), "-o", str(out), "--runs", "2", "--epochs", "1")
    assert code == 0, text
    assert "mean" in text and "sd" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["mean"]) == {"SIC", "SOD", "FLOE", "combined"}
    assert len(summary["runs"]) == 2
    ens = (out / "ensemble.toml").read_text()
    assert '"run-1/best.safetensors"' in ens and '"run-2/best.safetensors"' in ens
    assert (out / "run-2" / "best.safetensors").is_file()


def test_presets_load_by_name() -> None:
    names = preset_names()
    assert "quick-cpu" in names and "model-1" in names and len([n for n in names if n.startswith("model-")]) == 10
    for name in names:
        cfg = load_train_config(name)
        assert cfg.patch_size >= 16
    m1 = load_train_config("model-1")
    assert (m1.factor, m1.batch_size, m1.patch_size, m1.epochs, m1.iterations) == (10, 16, 256, 300, 500)
    assert m1.filters == (32, 32, 64, 64) and len(m1.channels) == 16
    assert load_train_config("model-9").separate_decoders
    tex = load_train_config("model-1-texture")
    assert tex.channels[:16] == m1.channels and len(tex.channels) == 24
    assert (tex.factor, tex.epochs, tex.lr, tex.filters) == (m1.factor, m1.epochs, m1.lr, m1.filters)
    assert load_train_config("model-8").sic_mode == "classification"
    q = load_train_config("quick-cpu", overrides=["epochs=1"], data="x")
    assert (q.factor, q.patch_size, q.batch_size, q.filters, q.epochs, q.data) == (5, 96, 8, (16, 16, 32, 32), 1, "x")


def test_augment_batch_keeps_labels_valid() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 6, (8, 3, 32, 32), dtype=torch.uint8)
    y[:, :, :4] = FILL
    xa, ya = augment_batch(x, y, AugmentSpec(p=1.0), gen)
    assert xa.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    vals = set(torch.unique(ya).tolist())
    assert vals <= set(range(6)) | {FILL}
    # p = 0: identity
    xb, yb = augment_batch(x, y, AugmentSpec(p=0.0), gen)
    assert torch.equal(xb, x) and torch.equal(yb, y)
    # same generator state -> same result
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a1 = augment_batch(x, y, AugmentSpec(), g1)
    a2 = augment_batch(x, y, AugmentSpec(), g2)
    assert torch.equal(a1[0], a2[0]) and torch.equal(a1[1], a2[1])


def test_loss_ignores_fill() -> None:
    out = {"SIC": torch.zeros(1, 1, 2, 2), "SOD": torch.zeros(1, 6, 2, 2), "FLOE": torch.zeros(1, 7, 2, 2)}
    y = torch.full((1, 3, 2, 2), FILL, dtype=torch.uint8)
    y[0, 0, 0, 0] = 4
    total, terms = multitask_loss(out, y)
    assert terms["SIC"] == pytest.approx(16.0)
    assert terms["SOD"] == 0.0 and terms["FLOE"] == 0.0
    assert total.item() == pytest.approx(16.0)
    y[0, 1, 0, 0] = 2
    _, terms = multitask_loss(out, y)
    assert terms["SOD"] == pytest.approx(np.log(6), rel=1e-5)


def test_bad_set_value_blames_set(tmp_path):
    from icechart.errors import ConfigError
    from icechart.training.config import load_train_config

    conf = Path(__file__).parent / "conf" / "train_tiny.toml"
    with pytest.raises(ConfigError, match=r"^--set: `epochs`"):
        load_train_config(conf, overrides=["epochs=abc"])
