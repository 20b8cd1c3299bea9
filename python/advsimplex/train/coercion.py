"""Values from YAML files and command-line flags as the types of :class:`~.config.TrainConfig`'s fields.

Booleans accept ``true/false, yes/no, on/off, 1/0``; floats accept fractions (``2/255``); ints accept
integral floats (``3.0``) but not ``1.5``; optional fields accept ``none``/``null``/empty; list fields
accept one value or a list. Errors are :class:`~.config.ConfigError` starting with the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing

from ..runtime import parse_number
from .choices import ConfigError

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


@functools.cache
def field_type(schema: type, name: str) -> tuple[type, bool, bool]:
    """(base type, optional, is-list) of field ``name`` of the dataclass ``schema`` (postponed annotations)."""
    hint = typing.get_type_hints(schema)[name]
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional, hint = True, args[0]
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], optional, True
    return hint, optional, False


def coerce_values(schema: type, values: dict, source: str = "config") -> dict:
    """``{field name: coerced value}`` for ``values`` (keys may use dashes) against the fields of the dataclass
    ``schema`` (:class:`~.config.TrainConfig`); unknown keys name close matches."""
    if not isinstance(values, dict):
        raise ConfigError(f"config: {source} must hold a mapping of keys to values, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(schema)}
    out = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            close = difflib.get_close_matches(name, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"{key}: unknown config key in {source}{hint}")
        out[name] = coerce(schema, known[name], value)
    return out


def coerce(schema: type, f: dataclasses.Field, value):
    """``value`` (from YAML or a flag) as the type of field ``f`` of ``schema``."""
    kind, optional, is_list = field_type(schema, f.name)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if not optional:
            raise ConfigError(f"{f.name}: may not be empty")
        return None
    if is_list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{f.name}: expected a list, got {value!r}")
        return [_scalar(f.name, kind, v) for v in value]
    return _scalar(f.name, kind, value)


def _scalar(name: str, kind: type, value):
    if kind is bool:
        return _boolean(name, value)
    if kind is float:
        return _number(name, value)
    if kind is int:
        return _integer(name, value)
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return str(value)


def _boolean(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _number(name: str, value) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_number(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: expected a number (or a fraction like 2/255), got {value!r}") from exc


def _integer(name: str, value) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected an int, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value))
    except ValueError as exc:
        raise ConfigError(f"{name}: expected an int, got {value!r}") from exc
