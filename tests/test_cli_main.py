"""The command-line group: version, logging, and exit codes for every bad-input path."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from icechart import __version__
from icechart.cli.main import cli
from icechart.io import contract as C
from icechart.synth import make_scene, write_scene


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_version():
    r = run("--version")
    assert r.exit_code == 0
    assert __version__ in r.output and "default model" in r.output


def test_help_lists_exit_codes():
    r = run("--help")
    assert r.exit_code == 0
    assert "65" in r.output and "bad input data" in r.output


def test_info_ok(scene_path):
    r = run("info", "--json", str(scene_path))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout.splitlines()[0])
    assert d["sar_shape"] == [123, 117] and d["labels"] is True


def test_missing_input_is_66(tmp_path):
    r = run("info", str(tmp_path / "nope.nc"))
    assert r.exit_code == 66
    assert "nope.nc" in r.stderr and "no such file" in r.stderr
    assert "Traceback" not in r.output


def _bad(tmp_path, name: str, content: bytes):
    p = tmp_path / name
    p.write_bytes(content)
    return p


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty_prep.nc", b"", "empty file"),
        ("text_prep.nc", b"this is not a netCDF file\n" * 20, "not a readable netCDF"),
    ],
)
def test_unreadable_files_are_65(tmp_path, name, content, needle):
    p = _bad(tmp_path, name, content)
    r = run("info", str(p))
    assert r.exit_code == 65, r.output
    assert needle in r.stderr and name in r.stderr
    assert "Traceback" not in r.output


def test_truncated_netcdf_is_65(tmp_path, scene_path):
    data = scene_path.read_bytes()
    p = _bad(tmp_path, "20210101T000000_dmi_prep.nc", data[: len(data) // 2])
    r = run("info", str(p))
    assert r.exit_code == 65, r.output
    assert p.name in r.stderr
    assert "Traceback" not in r.output


def _write(tmp_path, ds):
    p = tmp_path / "20210101T000000_dmi_prep.nc"
    write_scene(ds, p)
    return p


def test_missing_variable_is_65_naming_it(tmp_path):
    p = _write(tmp_path, make_scene((60, 70), seed=2).drop_vars([C.PRIMARY]))
    r = run("info", str(p))
    assert r.exit_code == 65
    assert "nersc_sar_primary" in r.stderr and p.name in r.stderr


def test_wrong_dtype_is_65(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds[C.SECONDARY] = ds[C.SECONDARY].fillna(0).astype("int16")
    p = _write(tmp_path, ds)
    r = run("info", str(p))
    assert r.exit_code == 65
    assert "dtype" in r.stderr and "nersc_sar_secondary" in r.stderr


def test_wrong_dims_is_65(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds["SIC"] = (("x", "y"), ds["SIC"].values)
    p = _write(tmp_path, ds)
    r = run("info", str(p))
    assert r.exit_code == 65
    assert "dims" in r.stderr and "SIC" in r.stderr


def test_all_nan_sar_is_65(tmp_path):
    ds = make_scene((60, 70), seed=2)
    ds[C.PRIMARY].values[:] = np.nan
    p = _write(tmp_path, ds)
    r = run("info", str(p))
    assert r.exit_code == 65
    assert "entirely invalid" in r.stderr and p.name in r.stderr


def test_no_traceback_without_verbose_but_with(tmp_path):
    p = _bad(tmp_path, "x_prep.nc", b"garbage")
    r = run("info", str(p))
    assert "Traceback" not in r.stderr
    r = run("-v", "info", str(p))
    assert r.exit_code == 65
    assert "Traceback" in r.stderr


def test_synth_cli_and_module_entry(tmp_path):
    r = run("synth", str(tmp_path / "s"), "--scenes", "2", "--size", "61x53", "--seed", "4", "--test")
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "s").glob("*_prep.nc"))
    assert len(files) == 2
    assert len(list((tmp_path / "s" / "reference").glob("*_reference.nc"))) == 2
    out = subprocess.run(
        [sys.executable, "-m", "icechart", "info", str(files[0])], capture_output=True, text=True
    )
    assert out.returncode == 0 and "no labels" in out.stdout


def test_synth_bad_size_is_usage_error(tmp_path):
    r = run("synth", str(tmp_path), "--size", "12")
    assert r.exit_code == 2
    assert "LINESxSAMPLES" in r.output


def test_synth_refuses_to_overwrite(tmp_path):
    args = ("synth", str(tmp_path / "s"), "--scenes", "2", "--size", "40x40", "--seed", "4")
    assert run(*args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "s").glob("*.nc")}
    r = run(*args)
    assert r.exit_code == 73
    assert "exists" in r.stderr and "--overwrite" in r.stderr
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "s").glob("*.nc")} == before
    assert run(*args, "--overwrite").exit_code == 0


def test_log_file_that_cannot_be_opened_is_73(tmp_path):
    r = run("--log-file", str(tmp_path / "no" / "such" / "log"), "synth", str(tmp_path / "s"), "--size", "40x40")
    assert r.exit_code == 73
    assert "cannot open log file" in r.stderr


def test_every_command_is_registered():
    """Each click command defined in icechart/cli/ is a subcommand of `icechart` (explicitly
    registered in cli/main.py, so a typo or a missing module is an import error, not a silently
    absent command)."""
    import importlib
    import pkgutil

    import click

    import icechart.cli

    defined = {}
    nested = set()
    for info in pkgutil.iter_modules(icechart.cli.__path__):
        mod = importlib.import_module(f"icechart.cli.{info.name}")
        for obj in vars(mod).values():
            if isinstance(obj, click.Command) and obj is not cli and getattr(obj.callback, "__module__", None) == mod.__name__:
                defined[obj.name] = obj
                if isinstance(obj, click.Group):
                    nested.update(id(c) for c in obj.commands.values())
    defined = {n: c for n, c in defined.items() if id(c) not in nested}
    assert {"predict", "score", "train", "calibrate", "info", "synth", "config"} <= set(defined)
    for name, command in defined.items():
        assert cli.commands.get(name) is command, f"command {name!r} is not registered in cli/main.py"
    assert set(cli.commands) == set(defined)
