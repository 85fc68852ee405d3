"""The ``icechart`` group: logging, version, and the ONE place errors become exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from typing import Any

import click

from icechart import __version__
from icechart.errors import IcechartError, OutputError, first_line, is_out_of_memory
from icechart.ops import signals as _signals

logger = logging.getLogger("icechart")

EXIT_CODES = {
    0: "ok (including skipped scenes)",
    1: "reserved for Click's own aborts",
    2: "usage error (Click)",
    65: "bad input data",
    66: "input missing or unreadable",
    69: "model unavailable or corrupt",
    70: "internal error",
    73: "cannot create output / exists without --overwrite",
    74: "I/O error (e.g. disk full)",
    75: "try again later: lock busy, out of memory, input changed while read",
    78: "bad configuration",
    129: "hung up (SIGHUP)",
    130: "interrupted (SIGINT)",
    143: "terminated (SIGTERM)",
}
LIBRARY_LOGGERS = ("rasterio", "fiona", "pyogrio", "netCDF4", "h5py", "PIL", "matplotlib", "pyproj", "shapely")
EXIT_EPILOG = "\b\nExit codes:\n" + "\n".join(f"  {k:>3}  {v}" for k, v in EXIT_CODES.items())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        d.update(getattr(record, "fields", {}) or {})
        return json.dumps(d)


def configure_logging(verbosity: int, *, log_file: str | None = None, fmt: str = "text") -> None:
    """Logs go to stderr (and ``log_file``); level WARNING +/- 10 per -v/-q (default INFO)."""
    level = max(logging.DEBUG, min(logging.CRITICAL, logging.INFO - 10 * verbosity))
    root = logging.getLogger("icechart")
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    formatter: logging.Formatter = (
        _JsonFormatter() if fmt == "json" else logging.Formatter("icechart: %(levelname)s: %(message)s")
    )
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as exc:
            raise OutputError(f"{log_file}: cannot open log file ({exc.strerror or exc})") from exc
    for h in handlers:
        h.setFormatter(formatter)
        root.addHandler(h)
    # GDAL (rasterio, fiona, pyogrio), netCDF and imaging libraries log their own errors; Python's
    # last-resort handler would print them raw on stderr. They go through our handlers, and
    # only with -v: the failure itself reaches the user as the one-line error of its exit code.
    for name in LIBRARY_LOGGERS:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = False
        lib.setLevel(level if verbosity > 0 else logging.CRITICAL + 1)
        for h in handlers:
            lib.addHandler(h)


def _version_message() -> str:
    try:
        from icechart.model.registry import default_model_id

        model = default_model_id()
    except Exception:  # no shipped model yet, or a broken registry: still print a version
        model = "none"
    return f"icechart {__version__} (default model: {model})"


class IcechartGroup(click.Group):
    """Maps :class:`IcechartError` to its exit code with a one-line message, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IcechartError as exc:
            _report(ctx, exc, exc.exit_code, exc.message)
        except KeyboardInterrupt:
            click.echo("icechart: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # `icechart ... | head`: the reader left; not an error of ours
            sys.stderr.close()
            ctx.exit(0)
        except Exception as exc:  # a bug: say so, exit 70, traceback only with -v/--debug
            if is_out_of_memory(exc):  # host or GPU memory, in any command: retry later (75)
                _report(ctx, exc, 75, f"out of memory ({first_line(exc, 120)}); retry with smaller "
                        "tiles or batches, on a free GPU or on another host")  # fmt: skip
            _report(ctx, exc, 70, f"internal error: {type(exc).__name__}: {exc}")


def _report(ctx: click.Context, exc: BaseException, code: int, message: str) -> None:
    verbose = (ctx.obj or {}).get("verbosity", 0) > 0
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    first = message.splitlines()[0] if message else type(exc).__name__
    click.echo(f"icechart: error: {first}", err=True)
    ctx.exit(code)


@click.group(
    cls=IcechartGroup,
    epilog=EXIT_EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "ICECHART"},
)
@click.version_option(__version__, "--version", message=_version_message())
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug); tracebacks on errors.")
@click.option("-q", "--quiet", count=True, help="Less log output (repeat for errors only).")
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks (same as -vv).")
@click.option("--log-file", type=click.Path(dir_okay=False), help="Also append logs to this file.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log line format on stderr and in --log-file.",
)
@click.option(
    "--defaults",
    "config_file",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    envvar="ICECHART_CONFIG",
    help="TOML file with [predict], [score], [train] option defaults (else $ICECHART_CONFIG, "
    "else the user file; see `icechart config`).",
)
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: int,
    quiet: int,
    debug: bool,
    log_file: str | None,
    log_format: str,
    config_file: str | None,
) -> None:
    """Sea-ice charts (SIC, SOD, FLOE) from AI4Arctic Sentinel-1 scenes with the MMSeaIce U-Net.

    \b
    Examples:
      icechart synth demo/ --scenes 1 --size 1003x997 --seed 1
      icechart predict demo/*.nc -o charts/
      icechart score --labels demo/ charts/
    """
    verbosity = verbose - quiet + (2 if debug else 0)
    ctx.obj = {"verbosity": verbosity}
    configure_logging(verbosity, log_file=log_file, fmt=log_format)
    from icechart.config import apply_config

    apply_config(ctx, config_file)


def _register() -> None:
    """Every command, by name (tests/test_cli_main.py checks that none is left out)."""
    from icechart.cli.cache import cache
    from icechart.cli.calibrate import calibrate
    from icechart.cli.config import config
    from icechart.cli.export import export
    from icechart.cli.info import info
    from icechart.cli.predict import predict
    from icechart.cli.score import score
    from icechart.cli.synth import synth
    from icechart.cli.train import train

    for command in (synth, info, score, train, predict, calibrate, export, config, cache):
        cli.add_command(command)


_register()


def main() -> None:  # pragma: no cover - console entry
    _signals.install()
    code: int = 0
    try:
        try:
            cli(prog_name="icechart")
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except SystemExit as exc:  # a signal while leaving the command
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        _signals.quiet()
    signum = _signals.received()
    if signum is None:
        # A normal exit keeps Python's finalisation (torch.distributed, atexit hooks); a signal
        # from now on is only recorded, so it can no longer print a traceback from there.
        sys.exit(code)
    # A signal arrived: its code wins, even if something on the way swallowed it, and the process
    # leaves without finalisation, where half-imported native libraries (torch, HDF5, GDAL) or
    # their threads could abort (a C++ terminate, exit 134).
    _signals.remove_temporaries()
    try:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    os._exit(128 + signum)
