"""The training cache: keys that change with the feature code, `icechart cache list|prune`, and
labels out of class range refused when an entry is built (65 naming the file)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.synth import make_scene, write_scene
from icechart.training import cache as K
from icechart.training.config import TrainConfig
from icechart.training.data import load_scene

TINY = Path(__file__).parent / "conf" / "train_tiny.toml"


@pytest.fixture()
def scene(tmp_path: Path) -> Path:
    ds = make_scene((60, 50), seed=7)
    p = tmp_path / "scenes" / ds.attrs["scene_id"]
    p.parent.mkdir()
    write_scene(ds, p)
    return p


def _sid(p: Path) -> str:
    return p.name.removesuffix("_prep.nc")


def _cfg(tmp_path: Path) -> TrainConfig:
    return TrainConfig(data=str(tmp_path / "scenes"), out=str(tmp_path / "run"), factor=4,
                       channels=("nersc_sar_primary", "nersc_sar_secondary"))  # fmt: skip


def test_key_changes_with_feature_code(scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = _cfg(tmp_path)
    load_scene(scene, cfg, cache)
    (first,) = K.list_entries(cache)
    assert first.stale is None and first.scene_id == _sid(scene)
    load_scene(scene, cfg, cache)
    assert len(K.list_entries(cache)) == 1  # reused
    # A fix to the feature code: a new entry is built, the old one is stale.
    monkeypatch.setattr(K, "feature_code_version", lambda: "0123456789abcdef")
    load_scene(scene, cfg, cache)
    entries = {e.key: e for e in K.list_entries(cache)}
    assert len(entries) == 2
    assert entries[first.key].stale == "built by other feature code"
    # other settings change the key too
    load_scene(scene, cfg.replace(sar_fill=-1.0), cache)
    assert len(K.list_entries(cache)) == 3


def test_feature_code_version_hashes_the_feature_modules() -> None:
    v = K.feature_code_version()
    assert len(v) == 16 and "icechart.features" in K.CODE_MODULES and "icechart.io.scene" in K.CODE_MODULES


def test_cache_list_and_prune_cli(scene: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    cfg = _cfg(tmp_path)
    load_scene(scene, cfg, cache, full_labels=True)
    ds = make_scene((60, 50), seed=8)
    other = scene.parent / ds.attrs["scene_id"]
    write_scene(ds, other)
    load_scene(other, cfg, cache)
    (cache / "feedfacefeedfacefeedface.x.npy").write_bytes(b"\0" * 64)  # an orphan without .json
    r = CliRunner().invoke(cli, ["cache", "list", str(cache)])
    assert r.exit_code == 0, r.output
    assert _sid(scene) in r.output and "3 entries" in r.output and "1 stale" in r.output
    doc = json.loads(CliRunner().invoke(cli, ["cache", "list", str(cache), "--json"]).output)
    assert {e["stale"] for e in doc["entries"]} == {None, "unreadable or missing .json"}
    # the second scene changes: its entry can never be used again
    os.utime(other, ns=(time.time_ns(), time.time_ns() + 10**9))
    r = CliRunner().invoke(cli, ["cache", "prune", str(cache), "--dry-run"])
    assert r.exit_code == 0 and "would remove 2 entries" in r.output and "source scene changed" in r.output
    assert len(K.list_entries(cache)) == 3
    r = CliRunner().invoke(cli, ["cache", "prune", str(cache)])
    assert r.exit_code == 0 and "removed 2 entries" in r.output
    (left,) = K.list_entries(cache)
    assert left.scene_id == _sid(scene) and len(left.files) == 4  # x, y, full, json
    r = CliRunner().invoke(cli, ["cache", "prune", str(cache), "--max-size", "1K"])
    assert r.exit_code == 0 and "removed 1 entries" in r.output
    assert list(cache.iterdir()) == []
    r = CliRunner().invoke(cli, ["cache", "prune", str(cache), "--max-size", "lots"])
    assert r.exit_code == 2 and "not a size" in r.output
    r = CliRunner().invoke(cli, ["cache", "list", str(tmp_path / "nope")])
    assert r.exit_code == 66 and "no such cache directory" in r.output


def test_prune_older_than(scene: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    load_scene(scene, _cfg(tmp_path), cache)
    (e,) = K.list_entries(cache)
    old = time.time() - 40 * 86400
    os.utime(cache / f"{e.key}.json", (old, old))
    assert K.prune(cache, older_than_days=50) == []
    assert [x.key for x in K.prune(cache, older_than_days=30)] == [e.key]
    assert list(cache.iterdir()) == []


def test_label_out_of_class_range_is_65_naming_the_file(tmp_path: Path) -> None:
    d = tmp_path / "scenes"
    d.mkdir()
    for k in range(3):
        ds = make_scene((60, 50), seed=20 + k)
        if k == 1:
            sod = ds["SOD"].values.copy()
            sod[5, 5] = 9  # SOD has classes 0..5
            ds["SOD"].values = sod
        write_scene(ds, d / f"2021031{k}T101010_dmi_prep.nc")
    r = CliRunner().invoke(cli, ["train", "--config", str(TINY), "--data", str(d), "-o", str(tmp_path / "run"), "--epochs", "1"])
    assert r.exit_code == 65, r.output
    assert "20210311T101010_dmi_prep.nc: SOD holds 1 label(s) outside the classes 0..5 (e.g. 9" in r.output
    assert not list((tmp_path / "run").glob("*.safetensors"))
