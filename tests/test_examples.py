"""examples/ use real, current options: every `icechart ... predict ...` line parses.

The crontab line, the systemd service's ExecStart and the watch-folder script's command are
taken apart with shlex; each option must appear in `icechart --help` / `icechart predict
--help`, and the whole command line must parse with the real Click commands (arity, types).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from icechart.cli.main import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _command_lines() -> list[tuple[str, list[str]]]:
    """(file, tokens from the icechart executable on) for every predict command in examples/."""
    found = []
    for path in sorted(EXAMPLES.iterdir()):
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or " predict " not in f" {line} ":
                continue
            if re.match(r"\w+=", line) and not line.startswith("ExecStart="):
                continue  # systemd keys such as Description=
            line = line.removeprefix("ExecStart=")
            tokens = shlex.split(line)
            if "predict" not in tokens:
                continue
            start = next(i for i, t in enumerate(tokens) if re.search(r"(^|/|\$)icechart$", t))
            found.append((path.name, tokens[start + 1 :]))
    return found


LINES = _command_lines()


def test_examples_hold_the_three_predict_commands() -> None:
    assert sorted(name for name, _ in LINES) == ["crontab", "icechart-predict.service", "watch-folder.sh"]


def _help_options(*args: str) -> set[str]:
    r = CliRunner().invoke(cli, [*args, "--help"])
    assert r.exit_code == 0, r.output
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", r.output))


@pytest.mark.parametrize(("name", "tokens"), LINES, ids=[n for n, _ in LINES])
def test_example_options_are_current(name: str, tokens: list[str]) -> None:
    k = tokens.index("predict")
    group_opts, predict_opts = tokens[:k], tokens[k + 1 :]
    known_group, known_predict = _help_options(), _help_options("predict")
    for tok in group_opts:
        if tok.startswith("-"):
            assert tok.split("=")[0] in known_group, f"{name}: `icechart {tok}` is not in `icechart --help`"
    for tok in predict_opts:
        if tok.startswith("-"):
            assert tok.split("=")[0] in known_predict, f"{name}: `{tok}` is not in `icechart predict --help`"
    # The whole line parses with the real commands (option arity and value types).
    ctx = cli.make_context("icechart", [*group_opts, "predict"])
    pctx = cli.commands["predict"].make_context("predict", list(predict_opts), parent=ctx)
    assert pctx.params["lock"], f"{name}: cron/systemd/watch-folder runs must hold a --lock"
    assert pctx.params["outdir"]
