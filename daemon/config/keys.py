"""Dotted keys over nested sections: the key table, flat views of a config, and building
checked sections from flat values whose origin an error then names."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamd.errors import ConfigError

from .rules import REDACTED, fields, hints, is_section, rule_of, split_optional


@functools.cache
def keys_of(cls: type) -> dict[str, Any]:
    """Every dotted key of a config class and its type: {'cache.max_capacity': int, ...}."""
    keys: dict[str, Any] = {}
    for f in fields(cls):
        hint = hints(cls)[f.name]
        if is_section(hint):
            keys.update({f"{f.name}.{key}": sub for key, sub in keys_of(hint).items()})
        else:
            keys[f.name] = hint
    return keys


def flatten(section: Any, prefix: str = "") -> dict[str, Any]:
    """{'cache.chunk': 256, ...}: a config's values under their dotted keys."""
    flat: dict[str, Any] = {}
    for f in fields(section):
        value = getattr(section, f.name)
        if is_section(type(value)):
            flat.update(flatten(value, f"{prefix}{f.name}."))
        else:
            flat[prefix + f.name] = value
    return flat


def as_dict(section: Any, redact: bool) -> dict[str, Any]:
    """Plain JSON-able data (paths as text, lists); secrets are '***' if `redact`."""
    out: dict[str, Any] = {}
    for f in fields(section):
        value = getattr(section, f.name)
        if is_section(type(value)):
            value = as_dict(value, redact)
        elif rule_of(f).secret and redact and value:
            value = REDACTED
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def given(cls: type, overrides: Mapping[str, object]) -> dict[str, object]:
    """The overrides that were given (None, or the empty tuple of a repeatable click option,
    means "not given"); an unknown key is an error."""
    unknown = [key for key in overrides if key not in keys_of(cls)]
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}'; known keys: {', '.join(keys_of(cls))}",
            unknown[0],
        )
    return {key: value for key, value in overrides.items() if value not in (None, (), [])}


def build(cls: type, flat: Mapping[str, Any], origins: Mapping[str, str]) -> Any:
    """A checked `cls` from flat values; an error ends with where its value came from."""
    try:
        return _build(cls, flat, "")
    except ConfigError as e:
        where = origins.get(e.key or "")
        if where is None:
            raise
        raise ConfigError(f"{e} (from {where})", e.key) from None


def _build(cls: type, flat: Mapping[str, Any], prefix: str) -> Any:
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        hint, key = hints(cls)[f.name], prefix + f.name
        if is_section(hint):
            kwargs[f.name] = _build(hint, flat, key + ".")
        elif key in flat:
            kwargs[f.name] = _coerce(flat[key], hint)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    """Bring a TOML / environment / CLI value to the field's type where that is unambiguous;
    anything else is left as it is for the section's check to refuse in words."""
    optional, base = split_optional(hint)
    if isinstance(value, str) and base is not str:
        if value == "" and optional:
            return None
        return _parse_text(value, base)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base not in (int, float, bool, str, Path) and isinstance(value, list | tuple):
        return tuple(value)
    return value


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}


def _parse_text(text: str, base: Any) -> Any:
    try:
        if base is bool:
            return _BOOLEANS.get(text.strip().lower(), text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        return text
    if base is Path:
        return Path(text)
    return tuple(item.strip() for item in text.split(",") if item.strip())
