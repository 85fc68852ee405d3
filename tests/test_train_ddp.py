"""DDP and the data path on CPU: 2 gloo processes under torchrun with a cold cache and with
--resume, per-rank random streams, rank-0-only summaries, SyncBatchNorm, resume across AMP
settings, out of memory -> 75, per-network validation splits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.testing import labelled_scenes

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return labelled_scenes(tmp_path_factory.mktemp("ddp_scenes"), shape=(90, 80), seed=300)


def _torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ICECHART_")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "icechart", "--debug", "train", "--config", str(TINY), "--device", "cpu", *args]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _hashes(text: str) -> dict[tuple[int, int, int], str]:
    """(rank, epoch, batch) -> sha1 of the batch, from the --debug log lines."""
    return {
        (int(r), int(e), int(b)): h
        for r, e, b, h in re.findall(r"rank (\d) epoch (\d+) batch (\d+) sha1 ([0-9a-f]+)", text)
    }


def test_ddp_cold_cache_in_parallel_and_rank_streams_across_resume(scenes: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # Cold cache, one epoch: both ranks build their share of the 3 entries.
    first = _torchrun("--data", str(scenes), "-o", str(tmp_path / "b"), "--epochs", "1",
                      "--cache-dir", str(cache), "--sync-batchnorm")  # fmt: skip
    built = {int(r): int(n) for r, n in re.findall(r"rank (\d) built (\d+) cache entr", first.stderr)}
    assert built == {0: 2, 1: 1}, first.stderr[-2000:]
    assert "sync_batchnorm ignored: SyncBatchNorm runs on CUDA devices only" in first.stderr
    h1 = _hashes(first.stderr)
    assert len(h1) == 2 * 3  # 2 ranks x 3 batches
    assert all(h1[(0, 1, b)] != h1[(1, 1, b)] for b in range(3))  # ranks draw different patches
    # Resume for the second epoch, and an uninterrupted two-epoch run to compare with.
    resumed = _torchrun("--data", str(scenes), "-o", str(tmp_path / "b"), "--epochs", "2",
                        "--cache-dir", str(cache), "--resume")  # fmt: skip
    assert not re.search(r"rank \d built \d+ cache entr", resumed.stderr)  # warm now
    h2 = _hashes(resumed.stderr)
    assert set(h2) == {(r, 2, b) for r in (0, 1) for b in range(3)}
    assert all(h2[(0, 2, b)] != h2[(1, 2, b)] for b in range(3))  # still per rank after --resume
    whole = _hashes(_torchrun("--data", str(scenes), "-o", str(tmp_path / "a"), "--epochs", "2",
                              "--cache-dir", str(cache)).stderr)  # fmt: skip
    assert {k: v for k, v in whole.items() if k[1] == 2} == h2  # each rank continues its own stream
    assert {k: v for k, v in whole.items() if k[1] == 1} == h1
    from icechart.model.checkpoint import load_checkpoint

    assert load_checkpoint(tmp_path / "b").meta["epoch"] in (1, 2)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and all(0 <= r["data_wait_share"] <= 1 for r in rows)


def test_ddp_runs_summaries_only_on_rank_0(scenes: Path, tmp_path: Path) -> None:
    res = _torchrun("--data", str(scenes), "-o", str(tmp_path / "ens"), "--runs", "2", "--epochs", "1",
                    "--set", "iterations=2", "--set", "calibrate=false")  # fmt: skip
    assert res.stdout.count("ensemble:") == 1  # one scores table
    assert (tmp_path / "ens" / "ensemble.toml").is_file()
    doc = json.loads((tmp_path / "ens" / "summary.json").read_text())
    assert len(doc["runs"]) == 2


# -- in one process -----------------------------------------------------------------------------
def test_patch_streams_per_rank_epoch_and_batch(scenes: Path, tmp_path: Path) -> None:
    from icechart.training.config import TrainConfig
    from icechart.training.data import PatchSampler, find_scenes, load_all

    cfg = TrainConfig(data=str(scenes), out=str(tmp_path / "r"), factor=4, channels=("nersc_sar_primary",))
    s = load_all(find_scenes(scenes), cfg, tmp_path / "cache")
    r0 = PatchSampler(s, patch=8, min_labelled=0.0, seed=5, rank=0)
    r1 = PatchSampler(s, patch=8, min_labelled=0.0, seed=5, rank=1)
    a = r0.batch(4, epoch=3, index=7)[0]
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(r1.batch(4, epoch=3, index=7)[0]))
    r0.batch(4, epoch=0, index=0)  # drawing other batches in between changes nothing
    np.testing.assert_array_equal(np.nan_to_num(a), np.nan_to_num(r0.batch(4, epoch=3, index=7)[0]))
    assert not np.array_equal(np.nan_to_num(a), np.nan_to_num(r0.batch(4, epoch=4, index=7)[0]))


def test_dataloader_workers_give_the_same_batches(scenes: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "w0", tmp_path / "w2"
    base = ["train", "--config", str(TINY), "--data", str(scenes), "--epochs", "2", "--cache-dir", str(tmp_path / "c")]
    assert CliRunner().invoke(cli, [*base, "-o", str(a), "--set", "workers=0"]).exit_code == 0
    r = CliRunner().invoke(cli, [*base, "-o", str(b), "--set", "workers=2"])  # persistent workers, 2 epochs
    assert r.exit_code == 0, r.output
    ma = [json.loads(x)["train_loss"] for x in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x)["train_loss"] for x in (b / "metrics.jsonl").read_text().splitlines()]
    assert ma == mb and ma[0] != ma[1]


def test_scaler_restored_across_amp_settings() -> None:
    from icechart.training.loop import restore_scaler

    off = torch.amp.GradScaler("cpu", enabled=False).state_dict()  # a CPU or amp=false run
    assert off == {}
    on = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(RuntimeError):
        on.load_state_dict(off)  # what resuming with AMP on did: "corrupt resume checkpoint" (69)
    restore_scaler(on, off)  # a fresh scale instead
    assert on.get_scale() == 65536.0
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=128.0).state_dict()
    restore_scaler(on, saved)
    assert on.get_scale() == 128.0
    restore_scaler(torch.amp.GradScaler("cpu", enabled=False), saved)  # AMP off: dropped


def test_sync_batchnorm_converts_on_cuda_only(caplog: pytest.LogCaptureFixture) -> None:
    from icechart.model.unet import build_net
    from icechart.training.loop import sync_batchnorm

    net = build_net({"in_channels": 2, "filters": [4, 8], "sic_mode": "regression", "separate_decoders": False})
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert n_bn > 0
    conv = sync_batchnorm(net, enabled=True, device=torch.device("cuda"), world=2)
    assert sum(isinstance(m, torch.nn.SyncBatchNorm) for m in conv.modules()) == n_bn
    net2 = build_net({"in_channels": 2, "filters": [4, 8], "sic_mode": "regression", "separate_decoders": False})
    assert sync_batchnorm(net2, enabled=True, device=torch.device("cpu"), world=2) is net2
    assert "sync_batchnorm ignored" in caplog.text
    assert sync_batchnorm(net2, enabled=True, device=torch.device("cuda"), world=1) is net2


def _oom(*_a: object, **_k: object) -> None:
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_out_of_memory_is_75_in_train(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icechart.training.loop as L

    monkeypatch.setattr(L, "multitask_loss", _oom)
    r = CliRunner().invoke(cli, ["train", "--config", str(TINY), "--data", str(scenes), "-o", str(tmp_path / "r"), "--epochs", "1"])
    assert r.exit_code == 75, r.output
    assert "out of memory in training" in r.output and "lower batch_size (2)" in r.output


def test_out_of_memory_is_75_in_calibrate_and_predict(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icechart.infer.predict as R
    import icechart.infer.calibrate as Cal
    from icechart.testing import random_checkpoint

    model = random_checkpoint(tmp_path / "m.safetensors")
    monkeypatch.setattr(Cal, "fit_calibration", _oom)
    r = CliRunner().invoke(cli, ["calibrate", "--model", str(model), "--labels", str(scenes), "-o", str(tmp_path / "c.safetensors")])
    assert r.exit_code == 75, r.output
    assert "out of memory" in r.output

    def cudnn_oom(*_a: object, **_k: object) -> None:
        raise RuntimeError("CUDA error: out of memory (cuDNN workspace)")

    monkeypatch.setattr(R, "predict_scene", cudnn_oom)
    scene = next(scenes.glob("*.nc"))
    r = CliRunner().invoke(cli, ["predict", str(scene), "-o", str(tmp_path / "o"), "--model", str(model), "--device", "cpu", "--formats", "netcdf"])
    assert r.exit_code == 75, r.output


def test_per_run_validation_split(scenes: Path, tmp_path: Path) -> None:
    base = ["train", "--config", str(TINY), "--data", str(scenes), "--runs", "2", "--epochs", "1",
            "--set", "iterations=1", "--set", "calibrate=false", "--cache-dir", str(tmp_path / "c")]  # fmt: skip
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "own"), "--set", 'val_split="per_run"', "--seed", "1"])
    assert r.exit_code == 0, r.output
    own = [json.loads((tmp_path / "own" / f"run-{k}" / "split.json").read_text())["val"] for k in (1, 2)]
    assert own[0] != own[1]  # seeds 1 and 2 draw different validation scenes
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "shared"), "--seed", "1"])
    assert r.exit_code == 0, r.output
    shared = [json.loads((tmp_path / "shared" / f"run-{k}" / "split.json").read_text())["val"] for k in (1, 2)]
    assert shared[0] == shared[1]
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "bad"), "--set", 'val_split="each"'])
    assert r.exit_code == 78 and "val_split" in r.output


def test_validation_metrics_csv(scenes: Path, tmp_path: Path) -> None:
    import csv

    out = tmp_path / "run"
    base = ["train", "--config", str(TINY), "--data", str(scenes), "-o", str(out), "--cache-dir", str(tmp_path / "c")]
    assert CliRunner().invoke(cli, [*base, "--epochs", "1"]).exit_code == 0
    r = CliRunner().invoke(cli, [*base, "--epochs", "2", "--resume"])
    assert r.exit_code == 0, r.output
    with open(out / "val_metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["epoch", "scene", "chart", "class", "name", "metric", "value"]
    assert sorted({r["epoch"] for r in rows}) == ["1", "2"]  # once per epoch, not repeated by --resume
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for m in metrics:
        comb = [r for r in rows if r["epoch"] == str(m["epoch"]) and r["chart"] == "combined"]
        assert len(comb) == 1 and float(comb[0]["value"]) == pytest.approx(m["val"]["combined"])
    per_class = [r for r in rows if r["epoch"] == "2" and r["chart"] == "SOD" and r["metric"] == "f1"]
    assert [r["class"] for r in per_class] == [str(i) for i in range(6)] and per_class[0]["name"] == "open_water"
    scenes_rows = {r["scene"] for r in rows if r["scene"] != "all"}
    assert len(scenes_rows) == 1  # n_val = 1: per-chart scores of that scene
