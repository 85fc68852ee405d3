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
    for path in sorted(p for p in EXAMPLES.rglob("*") if p.is_file() and p.suffix != ".yaml"):
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
            found.append((str(path.relative_to(EXAMPLES)), tokens[start + 1 :]))
    return found


LINES = _command_lines()


def test_examples_hold_the_three_predict_commands() -> None:
    assert sorted(name for name, _ in LINES) == [
        "crontab", "icechart-predict.service", "slurm/predict-array.sbatch", "watch-folder.sh",
    ]  # fmt: skip


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
    if name.startswith("slurm/"):  # array tasks share OUT: sharded, not locked against each other
        assert pctx.params["shard"] == "auto" and not pctx.params["lock"]
    else:
        assert pctx.params["lock"], f"{name}: cron/systemd/watch-folder runs must hold a --lock"
    assert pctx.params["outdir"]


def test_k8s_indexed_job_is_sharded_consistently() -> None:
    yaml = pytest.importorskip("yaml")
    job = yaml.safe_load((EXAMPLES / "k8s" / "predict-indexed-job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert int(env["ICECHART_SHARD_COUNT"]) == job["spec"]["completions"]
    tokens = c["command"]
    assert tokens[0] == "icechart"
    k = tokens.index("predict")
    ctx = cli.make_context("icechart", [*tokens[1:k], "predict"])
    pctx = cli.commands["predict"].make_context("predict", tokens[k + 1 :], parent=ctx)
    assert pctx.params["shard"] == "auto" and "autoice" in pctx.params["formats"]


def test_slurm_training_line_parses() -> None:
    line = next(
        ln for ln in (EXAMPLES / "slurm" / "train-multinode.sbatch").read_text().splitlines()
        if ln.strip().startswith("-m icechart train")
    )  # fmt: skip
    tokens = shlex.split(line)
    k = tokens.index("train")
    ctx = cli.make_context("icechart", ["train"])
    pctx = cli.commands["train"].make_context("train", tokens[k + 1 :], parent=ctx)
    assert pctx.params["resume"] and pctx.params["device"] == "cuda"
