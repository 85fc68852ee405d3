"""Hostile inputs and faults (issue 16): every case its exit code, one line naming the file,
nothing written outside OUT and nothing partial inside it.

Each case builds its bad input in code from a tiny synthetic scene or a random-weights
checkpoint. The commands run in-process (``CliRunner``) except where a real process is the
point (a FIFO, signals). The slow repetitions (a full tmpfs at every write stage 20 times,
50 random signals, concurrent runs) are scripts under ``benchmarks/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from click.testing import CliRunner

from icechart.atomic import TMP_PREFIX, atomic_path, confined, remove_stale_temporaries, temp_prefix
from icechart.cli.main import cli
from icechart.errors import OutputError, TryAgainError
from icechart.io import contract as C
from icechart.io.scene import open_scene
from icechart.ops import batch as B
from icechart.ops import manifest as M
from icechart.ops.lock import claim
from icechart.synth import make_scene, write_scene
from icechart.testing import random_checkpoint

SHAPE = (60, 56)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("hostile")
    ds = make_scene(SHAPE, seed=11)
    scene = d / ds.attrs["scene_id"]
    write_scene(ds, scene)
    model = random_checkpoint(d / "m.safetensors")
    return {"dir": d, "scene": scene, "model": model, "ds": ds}


def _invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False, env=env)


def _one_error_line(output: str) -> str:
    errs = [ln for ln in output.splitlines() if ln.startswith("icechart: error:")]
    assert len(errs) == 1, output
    assert "Traceback" not in output, output
    return errs[0]


def _tree(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _scene_copy(base: dict, tmp: Path, name: str | None = None) -> Path:
    p = tmp / "in" / (name or base["scene"].name)
    p.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(base["scene"], p)
    return p


def _modified_scene(base: dict, tmp: Path, edit) -> Path:
    ds = base["ds"].copy(deep=True)
    edit(ds)
    p = tmp / "in" / base["scene"].name
    p.parent.mkdir(parents=True, exist_ok=True)
    write_scene(ds, p)
    return p


def _model_dir(tmp: Path, base: dict, card: str) -> Path:
    d = tmp / "models" / "mymodel"
    d.mkdir(parents=True)
    shutil.copyfile(base["model"], d / "model.safetensors")
    (d / "model.toml").write_text(card)
    return d


# -- 1. nothing outside OUT -----------------------------------------------------------------
@pytest.mark.parametrize(
    "bad_id", ["x/../../ESCAPED", "..", "a\nb", "", "sub/dir", ".hidden", "a..b", "x" * 65]
)
def test_unsafe_model_id_is_69_and_nothing_written(base: dict, tmp_path: Path, bad_id: str) -> None:
    scene = _scene_copy(base, tmp_path)
    mdir = _model_dir(tmp_path, base, f"[model]\nid = {json.dumps(bad_id)}\n")
    out = tmp_path / "work" / "out"
    # The attack of issue 16: a directory named like the id's first part already in OUT.
    (out / f"{C.scene_id_from(None, scene)}_x").mkdir(parents=True)
    before = _tree(tmp_path)
    r = _invoke("predict", str(scene), "-o", str(out), "--model", str(mdir), "--device", "cpu")
    assert r.exit_code == 69, r.output
    assert "not a safe name" in _one_error_line(r.output)
    assert _tree(tmp_path) == before


def test_model_card_weights_outside_its_directory_is_69(base: dict, tmp_path: Path) -> None:
    shutil.copyfile(base["model"], tmp_path / "outside.safetensors")
    mdir = _model_dir(tmp_path, base, '[model]\nid = "ok"\nweights = "../../outside.safetensors"\n')
    r = _invoke("predict", str(_scene_copy(base, tmp_path)), "-o", str(tmp_path / "out"), "--model", str(mdir))
    assert r.exit_code == 69 and "outside the model directory" in _one_error_line(r.output)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_ensemble_with_unsafe_id_is_69(base: dict, tmp_path: Path) -> None:
    from icechart.model.ensemble import write_manifest

    (tmp_path / "ens").mkdir()
    shutil.copyfile(base["model"], tmp_path / "ens" / "a.safetensors")
    ens = write_manifest(tmp_path / "ens", ["a.safetensors"], model_id="../../up")
    r = _invoke("predict", str(_scene_copy(base, tmp_path)), "-o", str(tmp_path / "out"), "--model", str(ens))
    assert r.exit_code == 69 and "not a safe name" in _one_error_line(r.output)


def test_confined_atomic_path_refuses_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with confined(out):
        for dest in (tmp_path / "x.nc", out / "sub" / ".." / ".." / "y.nc", out / "a\nb.nc"):
            with pytest.raises(OutputError):
                with atomic_path(dest) as tmp:
                    tmp.write_text("no")
        with atomic_path(out / "fine.nc") as tmp:
            tmp.write_text("yes")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["fine.nc", "out"]


def test_run_batch_refuses_unsafe_model_id_before_anything(base: dict, tmp_path: Path) -> None:
    from icechart.errors import ModelError

    with pytest.raises(ModelError):
        B.run_batch([base["scene"]], lambda p: [], outdir=tmp_path / "out", model_id="../x",
                    model_sha256=None, options={}, device="cpu")  # fmt: skip
    assert not (tmp_path / "out").exists()


# -- 2. input replaced mid-run --------------------------------------------------------------
def _writer(out: Path, *, during=None):
    def process(path: Path) -> list[Path]:
        sc = open_scene(path)
        try:
            data = np.nan_to_num(sc.sar(C.PRIMARY)).tobytes()[:2000]
        finally:
            sc.close()
        if during is not None:
            during(path)
        dest = out / f"{sc.scene_id}_m.nc"
        with atomic_path(dest) as tmp:
            tmp.write_bytes(data)
        return [dest]

    return process


def test_input_replaced_while_read_is_75_nothing_left_and_rerun_charts_new(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)
    other = make_scene(SHAPE, seed=12)
    other.attrs["scene_id"] = scene.name
    new = tmp_path / "new.nc"
    write_scene(other, new)

    def replace(path: Path) -> None:  # `cp new .x && mv .x in/SCENE`
        shutil.copyfile(new, path.parent / ".x")
        os.replace(path.parent / ".x", path)

    out = tmp_path / "out"
    res = B.run_batch([scene], _writer(out, during=replace), outdir=out, model_id="m",
                      model_sha256=None, options={}, device="cpu")  # fmt: skip
    r = res.results[0]
    assert (r.status, r.exit_code) == ("failed", 75) and "changed while it was being read" in r.message
    assert sorted(p.name for p in out.iterdir()) == []
    res = B.run_batch([scene], _writer(out), outdir=out, model_id="m", model_sha256=None, options={}, device="cpu")
    assert res.exit_code == 0
    man = json.loads(next(out.glob("*.manifest.json")).read_text())
    assert man["inputs"][0]["sha256"] == M.sha256_file(new)


def test_input_rewritten_in_place_while_read_is_75(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)

    def append(path: Path) -> None:
        with open(path, "ab") as fh:
            fh.write(b"\0" * 10)

    out = tmp_path / "out"
    res = B.run_batch([scene], _writer(out, during=append), outdir=out, model_id="m",
                      model_sha256=None, options={}, device="cpu")  # fmt: skip
    assert res.exit_code == 75 and not list(out.iterdir())
    assert TryAgainError.exit_code == 75


# -- 3. plausibility ------------------------------------------------------------------------
def _shift(var: str, fn):
    def edit(ds) -> None:
        ds[var] = ds[var].copy(data=fn(ds[var].values))

    return edit


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_shift(C.LAT, lambda a: a + 40), "latitude"),
        (_shift(C.LON, lambda a: a + 1000), "longitude"),
        (_shift(C.LAT, lambda a: a * 1e12), "latitude"),
        (_shift(C.LAT, lambda a: np.where(np.arange(a.size).reshape(a.shape) == 3, np.nan, a)), "NaN"),
        (_shift(C.LON, lambda a: np.full_like(a, a.flat[0])), "along"),
        (_shift(C.LAT, lambda a: np.full_like(a, 70.0)), "tie points"),
        (_shift(C.LAT, lambda a: 80 + (a - a.mean()) * 20), "km"),
    ],
    ids=["lat+40", "lon+1000", "lat*1e12", "nan", "lon-identical", "lat-identical", "footprint"],
)
def test_implausible_tie_points_are_65_in_predict_and_info(base: dict, tmp_path: Path, edit, words: str) -> None:
    scene = _modified_scene(base, tmp_path, edit)
    r = _invoke("info", str(scene))
    assert r.exit_code == 65, r.output
    line = _one_error_line(r.output)
    assert "implausible geolocation" in line and words in line and str(scene) in line
    out = tmp_path / "out"
    r = _invoke("predict", str(scene), "-o", str(out), "--model", str(base["model"]), "--device", "cpu")
    assert r.exit_code == 65 and not [p for p in out.iterdir()]


def _huge_declared(path: Path, n: int) -> None:
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("sar_lines", n)
        nc.createDimension("sar_samples", n)
        nc.createDimension("sar_line_2dgrid_points", 2)
        nc.createDimension("sar_sample_2dgrid_points", 2)
        for v in (C.PRIMARY, C.SECONDARY):
            nc.createVariable(v, "f4", ("sar_lines", "sar_samples"), zlib=True, chunksizes=(256, 256))
        for v, val in ((C.LAT, [[70, 70], [73, 73]]), (C.LON, [[-60, -50], [-60, -50]])):
            x = nc.createVariable(v, "f8", ("sar_line_2dgrid_points", "sar_sample_2dgrid_points"))
            x[:] = np.array(val, float)


def test_declared_size_is_bounded_before_allocation(tmp_path: Path) -> None:
    p = tmp_path / "20200101T000000_dmi_prep.nc"
    _huge_declared(p, 200_000)
    t0 = time.monotonic()
    r = _invoke("info", str(p))
    assert r.exit_code == 65 and "larger than" in _one_error_line(r.output)
    assert time.monotonic() - t0 < 30  # refused from the header, not after reading 160 GB


def test_label_outside_the_class_table_is_65_naming_the_file(base: dict, tmp_path: Path) -> None:
    def edit(ds) -> None:
        sod = ds["SOD"].values.copy()
        sod[5, 5] = 17
        ds["SOD"] = ds["SOD"].copy(data=sod)

    scene = _modified_scene(base, tmp_path, edit)
    from icechart.errors import BadDataError

    with open_scene(scene) as sc:
        assert set(np.unique(sc.labels("SIC")).tolist()) <= set(range(11)) | {255}
        with pytest.raises(BadDataError, match=r"SOD holds 1 label\(s\) outside the classes 0\.\.5 \(e\.g\. 17") as ei:
            sc.labels("SOD")
    assert str(scene) in ei.value.message


# -- model metadata bounded before allocation; NaN weights --------------------------------
@pytest.mark.parametrize(
    ("meta", "words"),
    [
        ({"factor": 0}, "factor"),
        ({"factor": -3}, "factor"),
        ({"factor": 100000}, "factor"),
        ({"channels": ["nersc_sar_primary", "bogus"]}, "unknown input channel"),
        ({"norm": "garbage"}, "norm"),
        ({"norm": {"mean": [float("nan")] * 16, "std": [1.0] * 16}}, "norm.mean"),
        ({"interp": "cubic"}, "interp"),
    ],
)
def test_bad_checkpoint_metadata_is_69(base: dict, tmp_path: Path, meta: dict, words: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(base["model"]), framework="pt") as fh:
        header = dict(fh.metadata())
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    m = json.loads(header["icechart"])
    m.update(meta)
    header["icechart"] = json.dumps(m)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=header)
    r = _invoke("predict", str(_scene_copy(base, tmp_path)), "-o", str(tmp_path / "out"), "--model", str(bad))
    assert r.exit_code == 69, r.output
    assert words in _one_error_line(r.output)


def test_huge_filters_refused_before_building_the_net(tmp_path: Path) -> None:
    from icechart.errors import ModelError
    from icechart.model.checkpoint import check_meta_values

    meta = {"channels": ["nersc_sar_primary"], "factor": 10, "norm": {"mean": [0.0], "std": [1.0]},
            "arch": {"in_channels": 1, "filters": [3000] * 4}}  # fmt: skip
    with pytest.raises(ModelError, match="filters"):
        check_meta_values(meta, where="x")


def test_nan_weights_are_69(base: dict, tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from icechart.model.checkpoint import DIGEST_KEY, tensors_sha256

    with safe_open(str(base["model"]), framework="pt") as fh:
        header = dict(fh.metadata())
        state = {k: fh.get_tensor(k).clone() for k in fh.keys()}
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name].view(-1)[0] = torch.nan
    header[DIGEST_KEY] = tensors_sha256(state)
    bad = tmp_path / "nan.safetensors"
    save_file(state, str(bad), metadata=header)
    r = _invoke("predict", str(_scene_copy(base, tmp_path)), "-o", str(tmp_path / "out"), "--model", str(bad))
    assert r.exit_code == 69 and "NaN or infinity" in _one_error_line(r.output)


# -- configuration bounds (78) --------------------------------------------------------------
@pytest.mark.parametrize(
    "toml",
    ['[predict]\nlock = 5\n', '[predict]\nformats = 5\n', '[predict]\nresolution = nan\n',
     '[predict]\nresolution = inf\n', '[predict]\nsieve = 1000000000\n', '[predict]\noverwrite = "yes"\n'],
)
def test_bad_config_values_are_78(base: dict, tmp_path: Path, toml: str) -> None:
    cfg = tmp_path / "icechart.toml"
    cfg.write_text(toml)
    r = _invoke("--defaults", str(cfg), "predict", str(base["scene"]), "-o", str(tmp_path / "out"))
    assert r.exit_code == 78, r.output
    assert str(cfg) in _one_error_line(r.output)
    assert not (tmp_path / "5").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", [["--resolution", "inf"], ["--resolution", "nan"], ["--sieve", "1000000000"]])
def test_bad_numeric_flags_are_usage_errors(base: dict, tmp_path: Path, flag: list[str]) -> None:
    r = _invoke("predict", str(base["scene"]), "-o", str(tmp_path / "out"), *flag)
    assert r.exit_code == 2 and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "item", ["batch_size=100000000", "epochs=100000000", "patch_size=1000000", "lr=nan", "lr=inf",
             "filters=[3000, 3000, 3000, 3000]", "factor=100000"],
)
def test_training_numbers_bounded(item: str) -> None:
    from icechart.errors import ConfigError
    from icechart.training.config import load_train_config

    with pytest.raises(ConfigError):
        load_train_config("quick-cpu", overrides=[item])


# -- 4. faults: FIFOs, symlink loops, stale temporaries ------------------------------------
def test_fifo_is_refused_not_waited_on(base: dict, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    fifo = d / "20200101T000000_dmi_prep.nc"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    for args in ([str(fifo)], [str(d)]):
        p = subprocess.run(
            [sys.executable, "-m", "icechart", "predict", *args, "-o", str(out), "--model", str(base["model"]),
             "--device", "cpu"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert p.returncode == 66, p.stderr
        assert "not a regular file" in _one_error_line(p.stderr)
    r = _invoke("info", str(fifo))
    assert r.exit_code == 66


def test_symlink_loop_is_66(base: dict, tmp_path: Path) -> None:
    loop = tmp_path / "20200101T000000_dmi_prep.nc"
    os.symlink(loop.name, loop)
    r = _invoke("predict", str(loop), "-o", str(tmp_path / "out"), "--model", str(base["model"]))
    assert r.exit_code == 66, r.output


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = tmp_path / f"{TMP_PREFIX}{pid}-x-abc.nc"
    stale.write_text("left by kill -9")
    (tmp_path / f"{TMP_PREFIX}{pid}-shp-q").mkdir()
    (tmp_path / f"{TMP_PREFIX}{pid}-shp-q" / "a.shp").write_text("x")
    mine = tmp_path / f"{temp_prefix('y')}abc.nc"
    mine.write_text("live")
    foreign = tmp_path / ".tmp-notours.nc"
    foreign.write_text("not our pattern")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([stale.name, f"{TMP_PREFIX}{pid}-shp-q"])
    assert mine.exists() and foreign.exists()


# -- 5. reruns that heal ------------------------------------------------------------------
def _run(scene: Path, out: Path, *extra: str, base: dict):
    return _invoke("predict", str(scene), "-o", str(out), "--model", str(base["model"]), "--device", "cpu",
                   "--formats", "netcdf,png", *extra)  # fmt: skip


def test_deleted_or_corrupted_product_is_made_again(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)
    out = tmp_path / "out"
    assert _run(scene, out, base=base).exit_code == 0
    png = next(out.glob("*_SIC.png"))
    good = png.read_bytes()
    png.unlink()
    r = _run(scene, out, base=base)
    assert r.exit_code == 0 and "missing; making the scene again" in r.output
    assert png.read_bytes() == good
    # Same size, same mtime: only --verify can tell.
    st = png.stat()
    png.write_bytes(bytes(b ^ 0xFF for b in good))
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = _run(scene, out, base=base)
    assert r.exit_code == 0 and "up to date" in r.output
    r = _run(scene, out, "--verify", base=base)
    assert r.exit_code == 0 and "corrupt" in r.output
    assert png.read_bytes() == good
    # Changed mtime: found without --verify (hashed because the time changed).
    png.write_bytes(bytes(b ^ 0xFF for b in good))
    r = _run(scene, out, base=base)
    assert r.exit_code == 0 and "sha256 differs" in r.output and png.read_bytes() == good


def test_malformed_manifest_counts_as_incomplete(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)
    out = tmp_path / "out"
    assert _run(scene, out, base=base).exit_code == 0
    mf = next(out.glob("*.manifest.json"))
    data = json.loads(mf.read_text())
    data["files"] = 5
    data["model"] = "x"
    mf.write_text(json.dumps(data))
    r = _run(scene, out, base=base)
    assert r.exit_code == 0 and "malformed manifest" in r.output
    assert isinstance(json.loads(mf.read_text())["files"], list)


def test_failed_overwrite_puts_the_old_set_back(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)
    out = tmp_path / "out"
    assert B.run_batch([scene], _writer(out), outdir=out, model_id="m", model_sha256=None,
                       options={"a": 1}, device="cpu").exit_code == 0  # fmt: skip
    old = {p.name: p.read_bytes() for p in out.iterdir()}

    def failing(path: Path) -> list[Path]:
        files = _writer(out)(path)
        (out / files[0].name.replace(".nc", "_extra.png")).write_bytes(b"new")
        raise OutputError(f"{out}: something failed half-way")

    res = B.run_batch([scene], failing, outdir=out, model_id="m", model_sha256=None,
                      options={"a": 2}, device="cpu", overwrite=True)  # fmt: skip
    assert res.exit_code == 73
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_claimed_scene_is_left_to_its_holder(base: dict, tmp_path: Path) -> None:
    scene = _scene_copy(base, tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    sid = C.scene_id_from(None, scene)
    code = f"import sys,time; from icechart.ops.lock import claim\nwith claim({str(out)!r}, {sid + '_m'!r}) as ok:\n    print(ok, flush=True); time.sleep(30)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        res = B.run_batch([scene], _writer(out), outdir=out, model_id="m", model_sha256=None, options={}, device="cpu")
        assert res.exit_code == 0 and res.results[0].status == "skipped"
        assert "another run" in res.results[0].message and not list(out.glob("*.nc"))
    finally:
        holder.kill()
        holder.wait()
    with claim(out, sid + "_m") as ok:  # the dead holder's claim went with it
        assert ok
    res = B.run_batch([scene], _writer(out), outdir=out, model_id="m", model_sha256=None, options={}, device="cpu")
    assert res.results[0].status == "ok"
    assert not [p for p in out.iterdir() if p.name.startswith(".claim-")]


# -- score refuses what it cannot score ---------------------------------------------------------
@pytest.mark.parametrize(("chart", "edit", "words"), [
    ("SIC", "drop-units", "percent without `units"),
    ("SOD", "17", "not a class 0..5"),
])
def test_score_refuses_out_of_table_predictions(base: dict, tmp_path: Path, chart: str, edit: str, words: str) -> None:
    out = tmp_path / "out"
    r = _invoke("predict", str(base["scene"]), "-o", str(out), "--model", str(base["model"]), "--device", "cpu",
                "--formats", "netcdf")  # fmt: skip
    assert r.exit_code == 0, r.output
    nc = next(out.glob("*.nc"))
    with netCDF4.Dataset(nc, "a") as ds:
        v = ds.variables[chart]
        if edit == "drop-units":
            v.delncattr("units")
            v.set_auto_maskandscale(False)
            a = v[:]
            a[0, 0] = 40
            v[:] = a
        else:
            v.set_auto_maskandscale(False)
            a = v[:]
            a[0, 0] = 17
            v[:] = a
    r = CliRunner().invoke(cli, ["score", "--labels", str(base["scene"]), str(nc)])
    assert r.exit_code == 65, r.output
    line = _one_error_line(r.output)
    assert words in line and str(nc) in line


def test_library_error_on_a_full_disk_is_74_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import icechart.atomic as A
    from icechart.errors import OutputIOError

    monkeypatch.setattr(A, "_free_bytes", lambda d: 0)
    dest = tmp_path / "x.nc"
    with pytest.raises(OutputIOError, match=r"x\.nc: I/O error while writing \(disk full.*HDF error"):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("NetCDF: HDF error")
    monkeypatch.setattr(A, "_free_bytes", lambda d: 10 * 2**30)
    with pytest.raises(RuntimeError):  # with room left, a library error stays what it is (a bug: 70)
        with atomic_path(dest) as tmp:
            raise RuntimeError("NetCDF: HDF error")
    assert list(tmp_path.iterdir()) == []


def _wait_until_handled(pid: int) -> None:
    """Until /proc says process ``pid`` catches SIGHUP (its SigCgt mask): Python itself does
    not, so the command has installed its handlers, the first thing it does."""
    import signal

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        mask = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), 16)
        if mask >> (int(signal.SIGHUP) - 1) & 1:
            return
        time.sleep(0.005)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_signal_during_startup_imports_is_its_code_not_0_or_134(base: dict, tmp_path: Path) -> None:
    import signal

    out = tmp_path / "out"
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)):
        p = subprocess.Popen(
            [sys.executable, "-m", "icechart", "predict", str(base["scene"]), "-o", str(out), "--model",
             str(base["model"]), "--device", "cpu"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _wait_until_handled(p.pid)  # our handlers are in: the imports (click, numpy, torch) follow
        p.send_signal(sig)
        _, err = p.communicate(timeout=120)
        assert p.returncode == code, err
        assert "Traceback" not in err
        assert not out.exists() or not [q for q in out.iterdir()]


def test_impossible_date_and_text_fill_are_named_not_truncated(base: dict, tmp_path: Path) -> None:
    def bad_fill(ds) -> None:
        ds[C.PRIMARY].attrs["variable_fill_value"] = "minus nine"

    scene = _modified_scene(base, tmp_path, bad_fill)
    r = _invoke("info", str(scene))
    assert r.exit_code == 65 and "is not a number" in _one_error_line(r.output)
    assert "truncated" not in r.output
    bad_date = tmp_path / "20211399T256199_dmi_prep.nc"
    ds = base["ds"].copy()
    ds.attrs["scene_id"] = bad_date.name
    write_scene(ds, bad_date)
    r = _invoke("info", str(bad_date))
    assert r.exit_code == 65 and "impossible date" in _one_error_line(r.output)


def test_pickled_pt_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    import pickle

    import torch

    class Payload:
        def __reduce__(self):  # would run `touch` when unpickled
            return (os.system, (f"touch {tmp_path / 'RAN'}",))

    pt = tmp_path / "evil.pt"
    torch.save({"model": Payload(), "meta": "{}"}, pt, pickle_module=pickle)
    from icechart.errors import ModelError
    from icechart.model.checkpoint import read_checkpoint

    with pytest.raises(ModelError, match="not a weights-only checkpoint") as ei:
        read_checkpoint(pt)
    assert "\n" not in ei.value.message and not (tmp_path / "RAN").exists()
