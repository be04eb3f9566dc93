"""Loading a Config: defaults < TOML file < STREAMD_* environment < command-line overrides.

Environment names are STREAMD_ + the dotted key upper-cased, dots as underscores
(cache.max_capacity -> STREAMD_CACHE_MAX_CAPACITY); lists are comma-separated, an
empty value unsets an optional key. An error ends with where the value came from.
"""

from __future__ import annotations

import difflib
import functools
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamd.errors import ConfigError

from .keys import build, given, keys_of
from .paths import DEFAULT_CONFIG_PATH, default_client_id, default_control_socket, default_state_dir
from .schema import Config

ENV_PREFIX = "STREAMD_"
# STREAMD_* names that are not config keys, so unknown_environment() stays quiet about them.
NOT_CONFIG_KEYS = frozenset({"STREAMD_CONFIG"})


def config_keys() -> dict[str, Any]:
    """Every dotted key and its type: {'cache.max_capacity': int, ...}."""
    return keys_of(Config)


def env_var_for(key: str) -> str:
    """The environment variable that overrides a dotted key: cache.max_capacity ->
    STREAMD_CACHE_MAX_CAPACITY."""
    return ENV_PREFIX + key.replace(".", "_").upper()


@functools.cache
def _env_table() -> dict[str, str]:
    return {env_var_for(key): key for key in config_keys()}


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """STREAMD_* variables that name no key (typos the service should warn about)."""
    env = os.environ if environ is None else environ
    return sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX) and name not in _env_table() and name not in NOT_CONFIG_KEYS
    )


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Defaults < TOML file < STREAMD_* environment < overrides; raises ConfigError."""
    env = os.environ if environ is None else environ
    flat: dict[str, Any] = {
        "control.socket": default_control_socket(env),
        "state_dir": default_state_dir(env),
        "sources.mqtt.client_id": default_client_id(env),
    }
    origins: dict[str, str] = {}

    def merge(new: Mapping[str, Any], where: str) -> None:
        flat.update(new)
        origins.update(dict.fromkeys(new, where))

    file_path = DEFAULT_CONFIG_PATH if path is None else Path(path)
    if path is not None or file_path.exists():
        merge(_read_toml(file_path), str(file_path))
    for name, value in env.items():
        if name in _env_table():
            merge({_env_table()[name]: value}, name)
    merge(given(Config, overrides or {}), "the command line")
    config: Config = build(Config, flat, origins)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (see --config)") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return _flatten_table(table, "", path)


def _flatten_table(table: Mapping[str, Any], prefix: str, path: Path) -> dict[str, Any]:
    """{'cache': {'chunk': 4}} -> {'cache.chunk': 4}, refusing keys that are not ours."""
    flat: dict[str, Any] = {}
    sections = {key.rsplit(".", 1)[0] for key in config_keys() if "." in key}
    for name, value in table.items():
        key = prefix + name
        if key in sections:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} in {path} must be a table: [{key}]", key)
            flat.update(_flatten_table(value, key + ".", path))
        elif key in config_keys():
            flat[key] = value
        else:
            raise _unknown_key(key, prefix, path)
    return flat


def _unknown_key(key: str, prefix: str, path: Path) -> ConfigError:
    siblings = sorted(k[len(prefix) :].split(".")[0] for k in config_keys() if k.startswith(prefix))
    known = ", ".join(dict.fromkeys(siblings))
    close = difflib.get_close_matches(key[len(prefix) :], siblings, n=1)
    guess = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    where = f"[{prefix[:-1]}]" if prefix else "the top level"
    return ConfigError(f"unknown key '{key}' in {path}{guess}; known keys in {where}: {known}", key)
