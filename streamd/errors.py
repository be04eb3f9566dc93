"""The one error for a setting that cannot work, shared by connectors/, daemon/ and the session."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting with a value we cannot use; the message names the key, the value and the fix."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key  # the dotted config key, where the setting is one
