"""The configuration file, its precedence (flag > env > file > default) and `config show`."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from icechart.cli.main import cli
from icechart.config import apply_config, user_config_path
from icechart.errors import ConfigError, InputMissingError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user file or ICECHART_* variable of the machine leaks into these tests."""
    import os

    for k in list(os.environ):
        if k.startswith("ICECHART_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


def invoke(args: list[str], env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "ops.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def line(out: str, key: str) -> str:
    return next(ln for ln in out.splitlines() if ln.lstrip("# ").startswith(key + " "))


def test_show_defaults_without_file():
    r = invoke(["config", "show", "score"])
    assert r.exit_code == 0, r.output
    assert "configuration file: none" in r.output
    assert line(r.output, "range_codes") .startswith('range_codes = "mask"')
    assert line(r.output, "range_codes").endswith("# default")


def test_precedence_flag_env_file_default(tmp_path):
    cfg = write(tmp_path, '[score]\nrange_codes = "low"\ncsv = "a.csv"\nplots = "p/"\n')
    env = {"ICECHART_SCORE_CSV": "b.csv", "ICECHART_SCORE_PLOTS": "q/"}
    r = invoke(["--defaults", str(cfg), "config", "show", "score", "--", "--plots", "r/"], env=env)
    assert r.exit_code == 0, r.output
    assert line(r.output, "range_codes") == f'range_codes = "low"  # file {cfg}'
    assert line(r.output, "csv") == 'csv         = "b.csv"  # env ICECHART_SCORE_CSV'
    assert line(r.output, "plots") == 'plots       = "r/"  # flag'
    assert line(r.output, "json").endswith("# default")


def test_icechart_config_variable_and_user_file(tmp_path):
    cfg = write(tmp_path, '[score]\nrange_codes = "high"\n')
    r = invoke(["config", "show", "score"], env={"ICECHART_CONFIG": str(cfg)})
    assert r.exit_code == 0 and f"configuration file: {cfg}" in r.output
    user = user_config_path()
    assert str(user).startswith(str(tmp_path / "xdg"))
    user.parent.mkdir(parents=True)
    user.write_text('[score]\nrange_codes = "mid"\n')
    r = invoke(["config", "show", "score"])
    assert r.exit_code == 0 and line(r.output, "range_codes").startswith('range_codes = "mid"')
    r = invoke(["config", "path"])
    assert r.output.strip() == str(user)


def test_file_defaults_reach_the_command_help(tmp_path):
    cfg = write(tmp_path, '[score]\nrange_codes = "high"\n')
    r = invoke(["--defaults", str(cfg), "score", "--help"])
    assert r.exit_code == 0 and "default: high" in r.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[score]\nrange_code = "low"\n', "unknown key `range_code`; did you mean `range_codes`?"),
        ('[scor]\nrange_codes = "low"\n', "unknown key `scor`; did you mean `score`?"),
        ('[score]\nrange_codes = "lowest"\n', "`range_codes` = 'lowest'"),
        ("score = 3\n", "`score` must be a table"),
        ("[score\n", "invalid TOML"),
    ],
)
def test_bad_file_is_78(tmp_path, text, message):
    cfg = write(tmp_path, text)
    r = invoke(["--defaults", str(cfg), "config", "show"])
    assert r.exit_code == 78
    assert message in r.output and str(cfg) in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_bad_environment_is_78():
    r = invoke(["config", "show"], env={"ICECHART_SCORE_RANGECODES": "low"})
    assert r.exit_code == 78 and "did you mean `ICECHART_SCORE_RANGE_CODES`" in r.output
    r = invoke(["config", "show"], env={"ICECHART_SCORE_RANGE_CODES": "lowest"})
    assert r.exit_code == 78 and "ICECHART_SCORE_RANGE_CODES" in r.output


def test_missing_config_file_is_66(tmp_path):
    r = invoke(["--defaults", str(tmp_path / "nope.toml"), "config", "show"])
    assert r.exit_code == 66 and "no such configuration file" in r.output


def test_flags_need_a_section():
    r = invoke(["config", "show", "--", "--device", "cpu"])
    assert r.exit_code == 2


def _toy() -> click.Group:
    """A group wired like icechart's, to check the values a command really receives."""

    @click.group(context_settings={"auto_envvar_prefix": "ICECHART"})
    @click.option("--config", "config_file")
    @click.pass_context
    def g(ctx: click.Context, config_file: str | None) -> None:
        ctx.obj = {}
        apply_config(ctx, config_file)

    @g.command(name="predict")
    @click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
    @click.option("--lock-wait", type=float, default=0.0)
    @click.option("--formats", default="netcdf")
    def predict(device: str, lock_wait: float, formats: str) -> None:
        click.echo(f"{device} {lock_wait} {formats}")

    return g


def test_values_received_follow_precedence(tmp_path):
    cfg = write(tmp_path, '[predict]\ndevice = "cuda"\nlock_wait = 30\nformats = "png"\n')
    env = {"ICECHART_PREDICT_LOCK_WAIT": "5"}
    r = CliRunner().invoke(_toy(), ["--config", str(cfg), "predict", "--formats", "nc"], env=env)
    assert r.exit_code == 0, r.output
    assert r.output.split() == ["cuda", "5.0", "nc"]
    r = CliRunner().invoke(_toy(), ["predict"])
    assert r.output.split() == ["auto", "0.0", "netcdf"]


def test_apply_config_errors_are_typed(tmp_path):
    g = _toy()
    ctx = click.Context(g, info_name="g", obj={})
    with pytest.raises(ConfigError):
        apply_config(ctx, write(tmp_path, "[predict]\nlock_wait = 'soon'\n"), environ={})
    with pytest.raises(InputMissingError):
        apply_config(ctx, tmp_path / "missing.toml", environ={})


def test_example_config_is_valid():
    example = Path(__file__).resolve().parents[1] / "examples" / "icechart.toml"
    r = invoke(["--defaults", str(example), "config", "show"])
    assert r.exit_code == 0, r.output
    assert f"# file {example}" in r.output


# -- the real `predict` command's options ---------------------------------------------------
def test_predict_section_covers_every_option_and_round_trips(tmp_path):
    from icechart.config import config_options

    keys = set(config_options(cli.commands["predict"]))
    assert {"output", "model", "formats", "crs", "device", "overwrite", "lock", "lock_wait", "strict",
            "progress"} <= keys  # fmt: skip
    r = invoke(["config", "show", "predict", "--", "--lock", "/run/lock/ic.lock", "--strict"])
    assert r.exit_code == 0, r.output
    # What `config show` prints is a valid [predict] table: fed back as the file, every value
    # comes from the file.
    body = "\n".join(ln.split("  #")[0] for ln in r.output.splitlines() if ln and not ln.startswith("#"))
    cfg = write(tmp_path, body)
    r = invoke(["--defaults", str(cfg), "config", "show", "predict"])
    assert r.exit_code == 0, r.output
    for key in ("formats", "crs", "lock", "lock_wait", "strict", "device"):
        assert line(r.output, key).endswith(f"# file {cfg}"), line(r.output, key)
    assert line(r.output, "lock").startswith('lock') and "/run/lock/ic.lock" in line(r.output, "lock")


def test_predict_precedence_flag_env_file_default(tmp_path):
    cfg = write(tmp_path, '[predict]\nlock_wait = 5\nformats = ["netcdf"]\nstrict = true\nlock = "/a.lock"\n')
    env = {"ICECHART_PREDICT_LOCK_WAIT": "7", "ICECHART_PREDICT_FORMATS": "netcdf,png"}
    r = invoke(["--defaults", str(cfg), "config", "show", "predict", "--", "--lock", "/b.lock"], env=env)
    assert r.exit_code == 0, r.output
    assert line(r.output, "lock").startswith('lock') and line(r.output, "lock").endswith("# flag")
    assert '"/b.lock"' in line(r.output, "lock")
    assert line(r.output, "lock_wait").endswith("# env ICECHART_PREDICT_LOCK_WAIT") and "7.0" in line(r.output, "lock_wait")
    assert '["netcdf", "png"]' in line(r.output, "formats")
    assert line(r.output, "strict").endswith(f"# file {cfg}")
    assert line(r.output, "overwrite").endswith("# default")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[predict]\nlock_wiat = 3\n", "unknown key `lock_wiat`; did you mean `lock_wait`?"),
        ('[predict]\nformats = ["netcdf", "kml"]\n', "unknown format 'kml'"),
        ("[predict]\nlock_wait = -1\n", "`lock_wait` = -1"),
    ],
)
def test_bad_predict_keys_are_78(tmp_path, text, message):
    cfg = write(tmp_path, text)
    r = invoke(["--defaults", str(cfg), "config", "show", "predict"])
    assert r.exit_code == 78
    assert message in r.output and str(cfg) in r.output


def test_unreadable_user_config_dir_is_ignored(monkeypatch, tmp_path):
    from pathlib import Path

    from icechart import config

    def denied(self):  # what Path.is_file raises under a HOME we may not read
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config, "user_config_path", lambda: tmp_path / "locked" / "config.toml")
    monkeypatch.setattr(Path, "is_file", denied)
    assert config.find_config_file(None) is None
