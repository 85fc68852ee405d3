"""TensorBoard events of `icechart train` (icechart.training.tensorboard): the per-epoch losses,
learning rate, throughput and every val_metrics.csv row; resume without forked curves; off and
import-free without the package; "on" without it is 78."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.testing import labelled_scenes
from icechart.training import tensorboard as tb_mod

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_scenes(tmp_path_factory.mktemp("tb_scenes"), shape=(90, 80), seed=300)


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, ["train", "--config", str(TINY), *args])
    return res.exit_code, res.output


def _events(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def _series(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_events_carry_losses_lr_throughput_and_every_validation_row(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, text = _run("--data", str(scenes), "-o", str(out), "--set", 'tensorboard="on"')
    assert code == 0, text
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    acc = _events(out)
    tags = set(acc.Tags()["scalars"])
    for key, tag in (("train_loss", "loss/train"), ("lr", "lr"), ("patches_per_s", "throughput/patches_per_s"),
                     ("data_wait_share", "throughput/data_wait_share"), ("seconds", "time/epoch_s")):  # fmt: skip
        got = _series(acc, tag)
        assert [s for s, _ in got] == [1, 2]
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert [v for _, v in _series(acc, "loss/SOD")] == pytest.approx([r["loss_terms"]["SOD"] for r in rows], rel=1e-6)
    assert [v for _, v in _series(acc, "val/combined/score")] == pytest.approx([r["val"]["combined"] for r in rows], rel=1e-6)
    with (out / "val_metrics.csv").open() as fh:
        csv_rows = list(csv.DictReader(fh))
    assert csv_rows and {tb_mod.scalar_tag(r) for r in csv_rows} <= tags  # per chart, per class, per scene
    assert any(t.startswith("val/SOD/f1/1-") for t in tags)
    assert any(t.startswith("val_scene/") for t in tags)
    for r in csv_rows[:40]:
        step_values = dict(_series(acc, tb_mod.scalar_tag(r)))
        assert step_values[int(r["epoch"])] == pytest.approx(float(r["value"]), rel=1e-5, abs=1e-9)


def test_resume_continues_the_curves_and_off_writes_nothing(scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run("--data", str(scenes), "-o", str(out), "--epochs", "1")[0] == 0  # auto: installed here
    code, text = _run("--data", str(scenes), "-o", str(out), "--resume")
    assert code == 0, text
    assert [s for s, _ in _series(_events(out), "loss/train")] == [1, 2]
    off = tmp_path / "off"
    assert _run("--data", str(scenes), "-o", str(off), "--epochs", "1", "--set", 'tensorboard="off"')[0] == 0
    assert not (off / "tensorboard").exists()


def test_without_the_package(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb_mod, "tensorboard_available", lambda: False)
    out = tmp_path / "auto"
    assert _run("--data", str(scenes), "-o", str(out), "--epochs", "1")[0] == 0
    assert (out / "metrics.jsonl").exists() and not (out / "tensorboard").exists()
    code, text = _run("--data", str(scenes), "-o", str(tmp_path / "on"), "--epochs", "1", "--set", 'tensorboard="on"')
    assert code == 78 and "tensorboard package is not installed" in text
    assert not (tmp_path / "on" / "metrics.jsonl").exists()
    code, text = _run("--data", str(scenes), "-o", str(tmp_path / "bad"), "--set", 'tensorboard="sometimes"')
    assert code == 78 and "tensorboard" in text


def test_training_modules_do_not_import_tensorboard() -> None:
    code = "import sys, icechart.train, icechart.training.loop; assert not any(m.split('.')[0] == 'tensorboard' or m == 'torch.utils.tensorboard' for m in sys.modules), 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
