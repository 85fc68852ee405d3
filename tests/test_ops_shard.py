"""Sharding an archive run: the partition, K/N from Slurm and Kubernetes, and a job array run
simulated locally (one CliRunner call per array task, with the scheduler's variables)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from icechart.errors import ConfigError
from icechart.ops.shard import SHARD_DIR, Shard, parse_shard, partition, shard_from_env, shard_of
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint

SHAPE = (60, 50)


def test_parse_shard() -> None:
    assert parse_shard(None) is None and parse_shard("") is None
    assert parse_shard("0/1") == Shard(0, 1, "--shard 0/1")
    assert parse_shard(" 3 / 4 ") == Shard(3, 4, "--shard 3 / 4")
    for bad, msg in (("4/4", "outside 0..3"), ("1/0", "at least 1"), ("2", "expected K/N"), ("a/b", "expected K/N"), ("-1/3", "expected K/N")):
        with pytest.raises(ConfigError, match=msg):
            parse_shard(bad)


def test_shard_from_slurm_and_kubernetes() -> None:
    # --array=1-3: task ids 1, 2, 3 are shards 0, 1, 2 of 3
    slurm = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert shard_from_env(slurm) == Shard(2, 3, "SLURM_ARRAY_TASK_ID")
    assert parse_shard("auto", slurm) == Shard(2, 3, "SLURM_ARRAY_TASK_ID")
    # --array=0-8:4: ids 0, 4, 8
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "4",
                           "SLURM_ARRAY_TASK_COUNT": "3"}) == Shard(1, 3, "SLURM_ARRAY_TASK_ID")  # fmt: skip
    assert shard_from_env({"JOB_COMPLETION_INDEX": "0", "ICECHART_SHARD_COUNT": "5"}) == Shard(0, 5, "JOB_COMPLETION_INDEX")
    with pytest.raises(ConfigError, match="ICECHART_SHARD_COUNT is not set"):
        shard_from_env({"JOB_COMPLETION_INDEX": "0"})
    with pytest.raises(ConfigError, match="outside 0..4"):
        shard_from_env({"JOB_COMPLETION_INDEX": "5", "ICECHART_SHARD_COUNT": "5"})
    with pytest.raises(ConfigError, match="SLURM_ARRAY_TASK_COUNT=.x. is not an integer"):
        shard_from_env({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "x"})
    with pytest.raises(ConfigError, match="give --shard K/N"):
        shard_from_env({})


def test_partition_union_no_overlap_stable(tmp_path: Path) -> None:
    ids = [f"2019{m:02d}{d:02d}T0{h}0000_dmi_prep" for m in range(1, 13) for d in (1, 15) for h in range(3)]
    for n in (1, 2, 5, 16):
        shares = [{s for s in ids if shard_of(s, n) == k} for k in range(n)]
        assert set().union(*shares) == set(ids)  # union = all
        assert sum(map(len, shares)) == len(ids)  # no overlap
    assert all(len({s for s in ids if shard_of(s, 4) == k}) > 0 for k in range(4))  # every shard gets work
    # through partition(): files (missing ones keep their name as id), any order, any listing
    paths = [tmp_path / f"{s}.nc" for s in ids]
    got = {k: partition([str(p) for p in paths], Shard(k, 3)).paths for k in range(3)}
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    again = {k: partition(shuffled, Shard(k, 3)).paths for k in range(3)}
    for k in range(3):
        assert set(got[k]) == set(again[k])  # stable under reordering
    assert sorted(p for k in got for p in got[k]) == sorted(paths)
    # growing the archive never moves a scene to another shard
    more = paths + [tmp_path / "20200101T000000_dmi_prep.nc"]
    for k in range(3):
        assert set(got[k]) <= set(partition(more, Shard(k, 3)).paths)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("shard")
    (d / "scenes").mkdir()
    for seed in (51, 52, 55, 58):  # two scenes in each of 2 shards
        ds = make_scene(SHAPE, seed=seed)
        write_scene(ds, d / "scenes" / ds.attrs["scene_id"])
    return {"scenes": d / "scenes", "model": random_checkpoint(d / "m.safetensors")}


def _array_task(archive: dict, out: Path, env: dict[str, str], *extra: str) -> object:
    from icechart.cli.main import cli

    args = ["predict", str(archive["scenes"]), "-o", str(out), "--model", str(archive["model"]),
            "--device", "cpu", "--formats", "autoice", "--shard", "auto", *extra]  # fmt: skip
    clean = {k: None for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP",
                               "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "ICECHART_SHARD_COUNT")}  # fmt: skip
    return CliRunner().invoke(cli, args, env={**clean, **env}, catch_exceptions=False)


def _autoice_ids(out: Path) -> set[str]:
    import netCDF4

    (auto,) = out.glob("autoice_*.nc")
    with netCDF4.Dataset(auto) as nc:
        return {name.rsplit("_", 1)[0] for name in nc.variables}


def test_slurm_array_run_simulated(archive: dict, tmp_path: Path) -> None:
    from icechart.ops.batch import collect_scenes, scene_id_for

    out = tmp_path / "out"
    ids = sorted(scene_id_for(p) or "" for p in collect_scenes([archive["scenes"]]))
    expect = [{s for s in ids if shard_of(s, 2) == k} for k in range(2)]
    assert all(expect)  # both array tasks have scenes
    task = {"SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "2"}  # sbatch --array=1-2
    r = _array_task(archive, out, {**task, "SLURM_ARRAY_TASK_ID": "2"})
    assert r.exit_code == 0, r.output
    assert "shard 1/2" in r.output and "waiting for shard 0/2" in r.output
    done = {json.loads(p.read_text())["scene_id"] for p in out.glob("*.manifest.json")}
    assert done == expect[1]  # only its own scenes
    assert not list(out.glob("autoice_*.nc")) and not list(out.glob("shards_*.json"))  # not merged yet
    r = _array_task(archive, out, {**task, "SLURM_ARRAY_TASK_ID": "1"})
    assert r.exit_code == 0, r.output
    assert "is the last of 2: merging" in r.output
    assert len(list(out.glob("*.manifest.json"))) == len(ids)
    assert _autoice_ids(out) == set(ids)  # the merged file holds every shard's scenes
    (summary,) = out.glob("shards_*.json")
    doc = json.loads(summary.read_text())
    assert doc["scenes"] == len(ids) and doc["ok"] == len(ids) and doc["failed"] == [] and doc["shards"] == 2
    assert doc["collection"].startswith("autoice_") and doc["merged_by"] == 0
    markers = sorted(p.name for p in (out / SHARD_DIR).rglob("*-of-*.json"))
    assert markers == ["0-of-2.json", "1-of-2.json"]
    # A rerun of one task (e.g. requeued) skips its scenes and merges again, unchanged.
    mtime = next(out.glob("autoice_*.nc")).stat().st_mtime_ns
    r = _array_task(archive, out, {**task, "SLURM_ARRAY_TASK_ID": "2"})
    assert r.exit_code == 0 and "skipped" in r.output and "merging" in r.output
    assert next(out.glob("autoice_*.nc")).stat().st_mtime_ns == mtime
    assert json.loads(summary.read_text())["skipped"] == len(expect[1])


def test_indexed_job_run_and_other_partition_not_merged(archive: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    # An earlier 3-way run finished one shard; its marker must not count for this 2-way run.
    r = _array_task(archive, out, {"JOB_COMPLETION_INDEX": "0", "ICECHART_SHARD_COUNT": "3"})
    assert r.exit_code == 0, r.output
    for k in (0, 1):
        r = _array_task(archive, out, {"JOB_COMPLETION_INDEX": str(k), "ICECHART_SHARD_COUNT": "2"})
        assert r.exit_code == 0, r.output
    assert "merging" in r.output
    assert len(_autoice_ids(out)) == 4


def test_bad_shard_is_a_config_error(archive: dict, tmp_path: Path) -> None:
    r = _array_task(archive, tmp_path / "out", {})
    assert r.exit_code == 78 and "give --shard K/N" in r.output
    from icechart.cli.main import cli

    r = CliRunner().invoke(cli, ["predict", str(archive["scenes"]), "-o", str(tmp_path / "o"), "--shard", "2/2"])
    assert r.exit_code == 78 and "outside 0..1" in r.output
    assert not (tmp_path / "o").exists()
