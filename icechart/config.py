"""TOML configuration: loading and strict validation into frozen dataclasses.

Unknown or mistyped keys are errors (exit 78) with a "did you mean" hint (contract.md
"Configuration"; pip-tools ``_validate_config`` style).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from icechart.errors import ConfigError, InputMissingError

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing file is 66, a syntax error 78."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise InputMissingError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise InputMissingError(f"{path}: cannot read ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc


def unknown_key_error(key: str, allowed: typing.Iterable[str], *, where: str) -> ConfigError:
    """A ConfigError naming ``key`` with the closest allowed key as a hint."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean `{close[0]}`?" if close else ""
    return ConfigError(f"{where}: unknown key `{key}`{hint}")


def _check_type(value: Any, tp: Any, *, key: str, where: str) -> Any:
    """Check (and gently coerce: int -> float, list -> tuple) a TOML value against a type hint."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for a in args:
            try:
                return _check_type(value, a, key=key, where=where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: `{key}` = {value!r} has the wrong type (expected {tp})")
    if tp is type(None):
        if value is None:
            return None
    elif origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: `{key}` = {value!r}; expected one of {', '.join(map(repr, args))}")
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            items = [_check_type(v, item, key=key, where=where) for v in value]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{where}: `{key}` = {value!r} must be a finite number")
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: `{key}` = {value!r} has the wrong type (expected {getattr(tp, '__name__', tp)})")


def from_dict(cls: type[T], data: dict[str, Any], *, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``data``; unknown keys and bad types are 78."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(key, fields, where=where)
        kwargs[key] = _check_type(value, hints[key], key=key, where=where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


# -- the user configuration file: [predict], [score], [train] ---------------------------------
# Precedence (contract.md "Configuration"): flag > ICECHART_* environment > file > default.
# Implemented on Click's own machinery: the file becomes the group context's ``default_map``
# (one sub-map per command), the environment comes from ``auto_envvar_prefix="ICECHART"``
# (ICECHART_PREDICT_DEVICE, ICECHART_SCORE_RANGE_CODES, ...), and Click records where each
# value came from (``ctx.get_parameter_source``), which ``icechart config show`` prints.

SECTIONS = ("predict", "score", "train")
ENV_PREFIX = "ICECHART"
CONFIG_ENV = "ICECHART_CONFIG"
CONFIG_NAME = "icechart.toml"

Source = typing.Literal["default", "file", "env", "flag"]


def user_config_path() -> Path:
    """The per-user configuration file (platformdirs), e.g. ``~/.config/icechart/icechart.toml``."""
    import platformdirs

    return Path(platformdirs.user_config_path("icechart")) / CONFIG_NAME


def find_config_file(explicit: str | Path | None) -> Path | None:
    """The configuration file to use: ``explicit`` (``--defaults`` or ``ICECHART_CONFIG``, which
    must exist: 66 otherwise), else the user's file when it exists, else None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise InputMissingError(f"{path}: no such configuration file")
        return path
    user = user_config_path()
    try:
        return user if user.is_file() else None
    except OSError as exc:  # e.g. `sudo -u` without -H: HOME points at a directory we cannot read
        logging.getLogger(__name__).warning("%s: cannot check for a user configuration (%s); ignoring it", user, exc.strerror)
        return None


def option_key(param: Any) -> str:
    """The TOML key of a Click option: its longest flag without dashes, ``-`` -> ``_``
    (``--lock-wait`` -> ``lock_wait``, ``--json`` -> ``json``)."""
    longs = [o for o in param.opts if o.startswith("--")] or list(param.opts)
    return max(longs, key=len).lstrip("-").replace("-", "_")


def config_options(cmd: Any) -> dict[str, Any]:
    """The options of a Click command that a configuration can set, by TOML key.

    ``--help``, ``--version`` and other eager, value-less options are left out. Both the key
    and the Python parameter name (when different) are accepted.
    """
    import click

    out: dict[str, Any] = {}
    for p in cmd.params:
        if not isinstance(p, click.Option) or not p.expose_value or p.is_eager or p.name is None:
            continue
        out[option_key(p)] = p
    return out


def env_var_name(section: str, param: Any) -> str:
    """The variable for ``param`` of command ``section``: ``ICECHART_<SECTION>_<KEY>``, the
    same key as in the file (``--json`` -> ``ICECHART_SCORE_JSON``)."""
    return f"{ENV_PREFIX}_{section.upper()}_{option_key(param).upper()}"


def bind_env_vars(group: Any) -> None:
    """Give every configurable option of the sectioned commands its ``ICECHART_*`` variable.

    Click's ``auto_envvar_prefix`` would name a variable after the Python parameter name
    (``ICECHART_SCORE_JSON_OUT``); binding them explicitly keeps env and file keys identical.
    Options that declare their own ``envvar`` keep it. Idempotent.
    """
    for section in SECTIONS:
        cmd = group.commands.get(section)
        if cmd is None:
            continue
        for p in config_options(cmd).values():
            if p.envvar is None:
                p.envvar = env_var_name(section, p)


def _check_toml_type(param: Any, value: Any, *, where: str, key: str) -> None:
    """A TOML value must already have its option's kind: Click would turn ``lock = 5`` into the
    file name "5" and ``resolution = nan`` into NaN; both are 78 here."""
    import click

    t = param.type
    kind = "a string"
    if param.multiple or param.nargs != 1:
        ok = isinstance(value, (list, tuple, str))
        kind = "a list"
    elif isinstance(t, click.types.BoolParamType):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(t, (click.types.IntParamType,)) and not isinstance(t, click.types.FloatParamType):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(t, click.types.FloatParamType):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        kind = "a finite number"
    elif isinstance(t, (click.types.StringParamType, click.Path, click.Choice, click.File)):
        ok = isinstance(value, str)
    else:  # a command's own type (e.g. a format list) checks its values itself
        ok = isinstance(value, str) or (
            isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        )
        kind = "a string or a list of strings"
    if not ok:
        raise ConfigError(f"{where}: `{key}` = {value!r} has the wrong type (expected {kind})")


def _convert(ctx: Any, param: Any, value: Any, *, where: str, key: str) -> Any:
    import click

    if where != "environment":
        _check_toml_type(param, value, where=where, key=key)
    try:
        return param.type_cast_value(ctx, value)
    except click.BadParameter as exc:
        raise ConfigError(f"{where}: `{key}` = {value!r}: {exc.message}") from None


def build_default_map(
    group: Any, data: dict[str, Any], *, where: str, ctx: Any
) -> dict[str, dict[str, Any]]:
    """Validate a configuration file's tables against the group's commands -> ``default_map``.

    Unknown sections and keys are 78 with a "did you mean"; values are converted with the
    option's own Click type, so a bad value is 78 naming the file, section and key.
    """
    import click

    dm: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            raise unknown_key_error(section, SECTIONS, where=f"{where}: section")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: `{section}` must be a table ([{section}])")
        cmd = group.commands.get(section)
        if cmd is None:  # that command is not installed in this build
            continue
        opts = config_options(cmd)
        by_name = {p.name: p for p in opts.values()}
        sub_ctx = click.Context(cmd, info_name=section, parent=ctx)
        sub: dict[str, Any] = {}
        for key, value in table.items():
            param = opts.get(key) or by_name.get(key) or opts.get(key.replace("-", "_"))
            if param is None:
                raise unknown_key_error(key, opts, where=f"{where} [{section}]")
            _convert(sub_ctx, param, value, where=f"{where} [{section}]", key=key)
            sub[param.name] = value
        dm[section] = sub
    return dm


def check_environment(group: Any, ctx: Any, environ: typing.Mapping[str, str]) -> None:
    """Reject unknown ``ICECHART_{PREDICT,SCORE,TRAIN}_*`` variables and bad values (78)."""
    import click

    for section in SECTIONS:
        cmd = group.commands.get(section)
        if cmd is None:
            continue
        prefix = f"{ENV_PREFIX}_{section.upper()}_"
        opts = config_options(cmd)
        names = {(p.envvar if isinstance(p.envvar, str) else env_var_name(section, p)): p for p in opts.values()}
        sub_ctx = click.Context(cmd, info_name=section, parent=ctx)
        for var in sorted(v for v in environ if v.startswith(prefix)):
            param = names.get(var)
            if param is None:
                raise unknown_key_error(var, names, where="environment")
            raw = environ[var]
            value = param.type.split_envvar_value(raw) if param.multiple or param.nargs != 1 else raw
            _convert(sub_ctx, param, value, where="environment", key=var)


def apply_config(ctx: Any, explicit: str | Path | None, *, environ: typing.Mapping[str, str] | None = None) -> Path | None:
    """Load the configuration for the group context ``ctx`` and install it as ``default_map``.

    Called by the ``icechart`` group callback before the subcommand's context exists, so the
    subcommand's options take their defaults from the file (and Click's ``auto_envvar_prefix``
    puts the environment above it and flags above both).

    Returns
    -------
    Path or None
        The file used, also stored in ``ctx.obj["config_file"]``.
    """
    import os

    environ = os.environ if environ is None else environ
    group = ctx.command
    bind_env_vars(group)
    check_environment(group, ctx, environ)
    path = find_config_file(explicit)
    dm: dict[str, dict[str, Any]] = {}
    if path is not None:
        dm = build_default_map(group, load_toml(path), where=str(path), ctx=ctx)
    if ctx.default_map:
        for k, v in dm.items():
            ctx.default_map.setdefault(k, {}).update(v)
    else:
        ctx.default_map = dm
    if isinstance(ctx.obj, dict):
        ctx.obj["config_file"] = path
    return path


_SOURCE_NAMES: dict[str, Source] = {
    "COMMANDLINE": "flag",
    "ENVIRONMENT": "env",
    "DEFAULT_MAP": "file",
    "DEFAULT": "default",
    "PROMPT": "flag",
}


def effective_options(ctx: Any, section: str, args: typing.Sequence[str] = ()) -> list[tuple[str, Any, Source, str]]:
    """Each configurable option of command ``section``: (key, value, source, origin).

    ``args`` are parsed as that command's flags (so ``flag`` appears as a source). ``origin``
    names the file or environment variable a value came from ("" for defaults and flags).
    """
    cmd = ctx.find_root().command.commands[section]
    opts = config_options(cmd)
    sub = cmd.make_context(section, list(args), parent=ctx.find_root(), resilient_parsing=True)
    cfg = (ctx.find_root().obj or {}).get("config_file")
    rows = []
    for key, p in opts.items():
        src = sub.get_parameter_source(p.name)
        source: Source = _SOURCE_NAMES.get(src.name if src is not None else "DEFAULT", "default")
        envvar = p.envvar if isinstance(p.envvar, str) else env_var_name(section, p)
        origin = {"env": envvar, "file": str(cfg or "")}.get(source, "")
        rows.append((key, sub.params.get(p.name), source, origin))
    return rows
