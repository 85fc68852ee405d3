"""``icechart config``: show the effective configuration and where each value comes from."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from icechart.config import SECTIONS, effective_options, user_config_path

logger = logging.getLogger(__name__)


def _toml_value(value: Any) -> str | None:
    """A TOML literal for ``value``; None for unset values (printed as a comment)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        items = [_toml_value(v) for v in value]
        return "[" + ", ".join(i for i in items if i is not None) + "]"
    return json.dumps(str(value))


@click.group(name="config")
def config() -> None:
    """Inspect icechart's configuration.

    One optional TOML file with [predict], [score] and [train] tables sets option defaults;
    its keys are the long option names (--lock-wait -> lock_wait). The file is the group's
    --defaults FILE, else $ICECHART_CONFIG, else the per-user file (icechart config path).
    Precedence: flag > environment (ICECHART_<COMMAND>_<OPTION>, e.g.
    ICECHART_PREDICT_DEVICE=cpu) > file > default. Unknown keys are exit 78.

    \b
    Examples:
      icechart config show
      icechart --defaults ops.toml config show predict
      ICECHART_PREDICT_DEVICE=cpu icechart config show predict -- --overwrite
    """


@config.command(name="show", context_settings={"ignore_unknown_options": True})
@click.argument("section", required=False, type=click.Choice(SECTIONS))
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def show(ctx: click.Context, section: str | None, args: tuple[str, ...]) -> None:
    """Print the effective option values (as TOML) and where each came from.

    Each line ends with a comment naming its source: default, file (with its path), env
    (with the variable) or flag. With SECTION, further ARGS are parsed as that command's
    flags, to see what a given command line would use.

    \b
    Examples:
      icechart config show
      icechart config show predict -- --device cpu --lock /run/icechart.lock
    """
    root = ctx.find_root()
    if args and section is None:
        raise click.UsageError("flags after the section need a SECTION (predict, score or train)")
    cfg = (root.obj or {}).get("config_file")
    click.echo(f"# configuration file: {cfg if cfg else 'none'} (user file: {user_config_path()})")
    sections = [section] if section else [s for s in SECTIONS if s in root.command.commands]  # type: ignore[attr-defined]
    if section and section not in root.command.commands:  # type: ignore[attr-defined]
        raise click.UsageError(f"command `{section}` is not available in this installation")
    for name in sections:
        click.echo(f"\n[{name}]")
        rows = effective_options(ctx, name, args if section else ())
        width = max((len(k) for k, *_ in rows), default=0)
        for key, value, source, origin in rows:
            lit = _toml_value(value)
            where = f"{source} {origin}".strip()
            if lit is None:
                click.echo(f"# {key:<{width}} (unset)  # {where}")
            else:
                click.echo(f"{key:<{width}} = {lit}  # {where}")


@config.command(name="path")
def path() -> None:
    """Print the per-user configuration file's path (used when it exists).

    \b
    Examples:
      icechart config path
    """
    click.echo(str(user_config_path()))
