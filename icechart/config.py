"""TOML configuration: loading and strict validation into frozen dataclasses.

Unknown or mistyped keys are errors (exit 78) with a "did you mean" hint (contract.md
"Configuration"; pip-tools ``_validate_config`` style).
"""

from __future__ import annotations

import dataclasses
import difflib
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
