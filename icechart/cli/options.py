"""Options shared by several commands, declared once (rasterio rio/options.py style)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from icechart.errors import InputMissingError


def existing_paths(paths: tuple[str, ...] | list[str]) -> list[Path]:
    """Resolve inputs ourselves so a missing one is exit 66 (not Click's 2)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InputMissingError(f"{p}: no such file or directory")
        out.append(path)
    return out


def parse_size(_ctx: Any, _param: Any, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        a, b = value.lower().split("x")
        size = (int(a), int(b))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LINESxSAMPLES (e.g. 1003x997)") from None
    if min(size) < 30:
        raise click.BadParameter(f"{value!r}: each side must be at least 30 pixels")
    return size


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that also refuses NaN and infinity (Click lets both through:
    ``--resolution inf`` or ``nan`` would reach the writers)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        v = super().convert(value, param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return v


def output_opt(dest: str, *, metavar: str, help: str, required: bool = False) -> Any:
    """``-o/--output``: where a command writes (a directory or a file, per command)."""
    return click.option("-o", "--output", dest, required=required, default=None, metavar=metavar, help=help)


def model_opt(*, required: bool = False, metavar: str = "ID|FILE|DIR", help: str) -> Any:
    """``--model``: a shipped model id, a checkpoint, a training run directory or an ensemble."""
    return click.option("--model", "model_spec", required=required, metavar=metavar, help=help)


def json_opt(what: str) -> Any:
    """``--json``: the same flag in every command, ``what`` as JSON on stdout instead of the text
    output (``icechart score`` writes a file with ``--json-file FILE``)."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON on stdout instead of the text output.")


device_opt = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the network runs: auto picks CUDA when available.",
)
overwrite_opt = click.option(
    "--overwrite", is_flag=True, help="Replace existing products that differ from this run's."
)

# -- operations (icechart.ops): cron-safe batch runs -----------------------------------------
lock_opt = click.option(
    "--lock",
    metavar="FILE",
    help="Hold an flock on FILE for the run (released when the process dies); busy: exit 75.",
)
lock_wait_opt = click.option(
    "--lock-wait",
    type=FiniteFloatRange(min=0, max=7 * 86400),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Wait up to SECONDS for a busy --lock instead of exiting 75 at once.",
)
strict_opt = click.option(
    "--strict", is_flag=True, help="Fail a scene (65) on data warnings, e.g. most of the SAR invalid."
)
shard_opt = click.option(
    "--shard",
    metavar="K/N|auto",
    help="Do only shard K (0..N-1) of N of the scenes (by a hash of the scene id; stable across "
    "machines); auto: from SLURM_ARRAY_TASK_ID/COUNT or JOB_COMPLETION_INDEX with "
    "ICECHART_SHARD_COUNT. The last shard to finish merges the AutoICE file and writes "
    "shards_{model}.json.",
)
progress_opt = click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress on stderr (default: only when stderr is a terminal).",
)
verify_opt = click.option(
    "--verify",
    is_flag=True,
    help="Hash every product of a finished scene against its manifest (not only size and time); "
    "a damaged or missing product makes the scene be made again.",
)
