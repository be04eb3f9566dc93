"""The session's public surface, as the daemon side sees it.

The engine thread is the only caller of a Session; everything here is plain
data so it can cross into the asyncio side (and out as JSON) without touching
torch objects.
"""

from __future__ import annotations

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
