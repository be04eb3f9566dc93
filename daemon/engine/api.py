"""The session's public surface, as the daemon side sees it.

The engine thread is the only caller of a Session; everything here is plain
data so it can cross into the asyncio side (and out as JSON) without touching
torch objects.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from streamd.facts.claims import Verification
from streamd.facts.records import SummaryFacts


@dataclass(frozen=True)
class Summary:
    """One running summary, as emitted to the outputs."""

    text: str
    stream_tokens: int  # tokens of stream text ingested so far (excludes the pinned prefix)
    window_first: int  # absolute position of the oldest stream token the summary saw
    window_last: int  # absolute position of the newest one (-1 when the stream is empty)
    generated_tokens: int
    ttft_s: float  # instruction prefill + first token
    tpot_s: float  # mean time per output token after the first
    latency_s: float  # whole summary, wall time
    model: str
    facts: SummaryFacts | None = None  # what a grounded summary rests on
    verification: Verification | None = None  # its claims, as checked
    # The exact stream text the model saw (for eval-summaries; not in the records).
    window_text: str = field(default="", repr=False)
    time_limited: bool = False  # its time ran out: it ends at the last whole sentence

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SummaryRecord:
    """One summary as every output writes it (as_json()), numbered and stamped on the
    event loop (scheduler.py); facts and verification already JSON-ready."""

    seq: int
    time: str  # ISO 8601, UTC, milliseconds
    stream_tokens: int
    window_first: int
    window_last: int
    text: str
    latency_s: float
    ttft_s: float
    tpot_s: float
    generated_tokens: int
    model: str
    trigger: str  # tokens, seconds, request or shutdown
    facts: dict[str, Any] | None
    verification: dict[str, Any] | None

    @classmethod
    def of(cls, summary: Summary, seq: int, time: str, trigger: str) -> SummaryRecord:
        return cls(
            seq=seq,
            time=time,
            stream_tokens=summary.stream_tokens,
            window_first=summary.window_first,
            window_last=summary.window_last,
            text=summary.text,
            latency_s=round(summary.latency_s, 6),
            ttft_s=round(summary.ttft_s, 6),
            tpot_s=round(summary.tpot_s, 6),
            generated_tokens=summary.generated_tokens,
            model=summary.model,
            trigger=trigger,
            facts=summary.facts.as_dict() if summary.facts else None,
            verification=summary.verification.as_dict() if summary.verification else None,
        )

    def as_json(self) -> dict[str, Any]:
        """The JSON object (its keys in this order) for the outputs, the feed, snapshots."""
        return asdict(self)


class Deadline:
    """When a summary must stop writing (time.monotonic()), shared by the event loop,
    which may bring it forward (a shutdown: cut()), and the engine thread, which asks
    passed() between tokens. A float attribute: reading and writing it is atomic."""

    def __init__(self, seconds: float | None = None) -> None:
        self.at = float("inf") if not seconds else time.monotonic() + seconds

    def passed(self) -> bool:
        return time.monotonic() >= self.at

    def cut(self) -> None:
        """Stop at the next token: what is written so far, whole sentences only."""
        self.at = min(self.at, time.monotonic())


@dataclass(frozen=True)
class Ingested:
    tokens: int  # stream tokens prefilled
    retried: bool = False  # a forward pass failed; the rest went in smaller pieces


@dataclass(frozen=True)
class SessionStats:
    model: str
    device: str
    dtype: str
    pinned: int  # P: pinned prefix slots in use
    window: int  # W: stream tokens any query can see
    max_capacity: int  # P + W
    chunk: int  # C: largest prefill chunk
    used: int  # slots holding visible tokens now (pinned + window fill)
    cache_bytes: int  # K+V bytes allocated, all layers
    tokens_ingested: int  # stream tokens prefilled so far
    tokens_evicted: int  # stream tokens that slid out of the window
    position: int  # absolute position of the next stream token
    summaries: int
    timings: dict[str, float] = field(default_factory=dict)  # last prefill/summary timings
    decode: str = ""  # "fused step", or "the model's own forward (why)"
    threads: int = 0  # CPU threads of torch's intra-op pool
    refresh_every: int = 0  # stream tokens between two refreshes of the window (0: never)
    refreshes: int = 0  # refreshes of the window so far

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_lines(text: str) -> list[str]:
    """The lines of a message as the stream holds them: blank ones dropped."""
    return [line for line in text.splitlines() if line.strip()]
