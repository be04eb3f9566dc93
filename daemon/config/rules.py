"""What a setting accepts, each rule written once, and the Section base that applies them.

A field's Rule (ranges, choices, a pattern) sits in its metadata; values several
places check (max_capacity, chunk...) are named here and shared with the session.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from streamd.cache.layout import REFRESH_CHOICES
from streamd.errors import ConfigError
from streamd.facts.claims import POLICIES
from streamd.facts.records import PROFILES

REDACTED = "***"
DEFAULT_MODEL = "default"  # the embedded SmolLM2 GGUF (model_loading.py)
# --dtype: int4 is bf16 with int4 copies of the weights for the decode step (a CPU path).
DTYPE_CHOICES = ("auto", "int4", "float32", "float16", "bfloat16")
MIN_PINNED = 4  # StreamingLLM: 4 sink tokens are enough, fewer and window attention collapses


@dataclass(frozen=True)
class Rule:
    """The values a field takes beyond its type, and the words an error uses for them."""

    at_least: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str | None = None  # the whole text must match
    expect: str = ""  # words for what is accepted, instead of the type and range
    hint: str = ""  # added after the requirement: "0 turns it off"
    secret: bool = False  # an error shows *** instead of the value
    absolute: bool = False  # a path must be absolute

    @property
    def meta(self) -> dict[str, Rule]:
        """The field metadata that puts this rule on a field."""
        return {"rule": self}

    def allows(self, value: Any, base: Any) -> bool:
        if not _type_ok(value, base):
            return False
        if self.choices and value not in self.choices:
            return False
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return False
        if self.absolute and not value.is_absolute():
            return False
        if self.at_least is not None and value < self.at_least:
            return False
        return not (self.at_most is not None and value > self.at_most)

    def words(self, hint: Any) -> str:
        """What a field of this type accepts: 'an integer >= 8', 'one of: auto, cpu'."""
        optional, base = split_optional(hint)
        if self.choices:
            words = "one of: " + ", ".join(self.choices)
        elif self.expect:
            words = self.expect
        else:
            words = _type_words(base, self.absolute)
            low, high = self.at_least, self.at_most
            if low is not None and high is not None:
                words += f" from {_number(low)} to {_number(high)}"
            elif low is not None:
                words += f" >= {_number(low)}"
        if optional:
            words += " (or unset)"
        return words + (f"; {self.hint}" if self.hint else "")

    def check(self, key: str, value: Any, hint: Any) -> None:
        """Raises ConfigError('KEY = VALUE: must be ...') unless `value` is allowed."""
        optional, base = split_optional(hint)
        if value is None and optional:
            return
        if not self.allows(value, base):
            why = f"must be {self.words(hint)}"
            raise ConfigError(f"{key} = {shown(value, self.secret)}: {why}", key)


NO_RULE = Rule()

# Rules the daemon's config and the session's settings share.
CAPACITY_RANGE = (2 * MIN_PINNED, 1 << 20)  # max_capacity = P + W, also on click options
MAX_CAPACITY = Rule(at_least=CAPACITY_RANGE[0], at_most=CAPACITY_RANGE[1])
CHUNK = Rule(at_least=1, at_most=1 << 16)
SUMMARY_MAX_TOKENS = Rule(at_least=1, at_most=4096)
SUMMARY_MODE = Rule(choices=("grounded", "plain"))
PROFILE = Rule(choices=PROFILES)
UNSUPPORTED = Rule(choices=POLICIES)
# cache.refresh (cache/layout.py: refresh_every says what each value means)
REFRESH = Rule(pattern=r"auto|off|[1-9][0-9]*", expect=f"{REFRESH_CHOICES}, like 128")


def fields(section: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(section)


def rule_of(f: dataclasses.Field[Any]) -> Rule:
    rule = f.metadata.get("rule", NO_RULE)
    assert isinstance(rule, Rule)
    return rule


_HINTS: dict[type, dict[str, Any]] = {}


def hints(cls: type) -> dict[str, Any]:
    """Field types with the string annotations resolved, once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def split_optional(hint: Any) -> tuple[bool, Any]:
    """(True, X) for `X | None`, else (False, hint)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return True, args[0]
    return False, hint


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _type_words(base: Any, absolute: bool) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if base in words:
        return words[base]
    if base is Path:
        return "an absolute path" if absolute else "a path"
    return "a list of strings"


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _type_ok(value: Any, base: Any) -> bool:
    if base is float:
        return isinstance(value, float) and value == value and abs(value) != float("inf")
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base in (bool, str, Path):
        return isinstance(value, base)
    return isinstance(value, tuple) and all(isinstance(item, str) and item for item in value)


def shown(value: Any, secret: bool = False) -> str:
    """A value as an error message shows it: repr, a list for a tuple, *** for a secret."""
    if secret and value:
        return REDACTED
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(str(value)) if isinstance(value, Path) else repr(value)


class Section:
    """Mixin for a frozen dataclass: every field's type and Rule after __init__, then the
    section's own _check (rules across fields), so a section built in code obeys them too."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for f in fields(self):
            hint = hints(type(self))[f.name]
            if not is_section(hint):
                rule_of(f).check(self.key(f.name), getattr(self, f.name), hint)
        self._check()

    def key(self, name: str) -> str:
        """The dotted config key of field `name`: 'cache.chunk'."""
        return f"{self.section}.{name}" if self.section else name

    def invalid(self, name: str, why: str) -> ConfigError:
        """'cache.chunk = 0: why', the value hidden if it is a secret."""
        secret = any(rule_of(f).secret for f in fields(self) if f.name == name)
        value = shown(getattr(self, name), secret)
        return ConfigError(f"{self.key(name)} = {value}: {why}", self.key(name))

    def _check(self) -> None:
        """Checks that involve several fields; sections override it."""
