"""The facts a summary rests on, as plain frozen data (JSON via as_dict())."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Profile = Literal["logs", "transcript"]
PROFILES = ("logs", "transcript", "auto")

# The entity kinds the log miner recognises (facts.entities), in display order.
ENTITY_KINDS = ("ip", "user", "host", "program", "status", "path")
# The severity words counted per line (facts.severity), in display order.
SEVERITIES = ("critical", "error", "warning", "failure", "denied")


@dataclass(frozen=True)
class TemplateCount:
    """One log template (Drain cluster) over a span of lines."""

    template: str  # e.g. "Failed password for <*> from <IP> port <NUM> ssh2"
    count: int  # lines of the span that belong to it (exact)
    example: str  # one real line of the span
    new: bool  # the template was first seen in this span (since the daemon started)


@dataclass(frozen=True)
class Counted:
    value: str
    count: int


@dataclass(frozen=True)
class LineFacts:
    """Exact facts about one span of lines: sum(t.count for t in templates) == lines."""

    profile: Profile
    lines: int
    templates: tuple[TemplateCount, ...] = ()  # count desc, then first seen
    severity: dict[str, int] = field(default_factory=dict)  # word -> lines carrying it
    entities: dict[str, tuple[Counted, ...]] = field(default_factory=dict)  # kind -> top values
    first_time: str | None = None  # earliest timestamp text in the span, as written
    last_time: str | None = None  # latest one
    # transcript profile
    speakers: tuple[Counted, ...] = ()
    terms: tuple[Counted, ...] = ()  # most salient words / phrases
    numbers: tuple[str, ...] = ()  # numbers said, as written
    dates: tuple[str, ...] = ()  # dates and times said, as written

    def as_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))


@dataclass(frozen=True)
class SummaryFacts:
    """What a summary is given: the lines since the previous summary and the window's."""

    since_last: LineFacts
    window: LineFacts
    templates_total: int  # Drain clusters alive now
    templates_evicted: int  # clusters dropped by the cap since start (least recently seen)

    def as_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples as lists, all the way down: the dict equals itself read back from JSON."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value
