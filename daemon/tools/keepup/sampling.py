"""What the tool reads of the daemon every few seconds: its `status` document (the one
`streamd status --json` prints) and its memory, kept as Samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

ACKED_SOURCE = "zmq-acked"  # the daemon's name for what `streamd send` delivers (wiring.py)


@dataclass(frozen=True)
class Sample:
    at_s: float  # seconds since the feed started
    sent: int  # lines written to `streamd send` by then
    received: int  # by the daemon (spooled)
    ingested: int  # in the cache
    queue_depth: int  # messages waiting in the ingest queue
    oldest_unread_s: float  # age of the oldest message not yet in the cache (0: none)
    keeps_up: bool  # the daemon's own judgement (lag within its --max-lag-seconds)
    tokens_per_s: float  # over the last minute
    doing: str  # idle, ingesting, summarizing, ...
    doing_for_s: float
    summaries: int  # emitted so far
    rss_bytes: int | None  # VmRSS; None once the process is gone
    ingesting_s: float = 0.0  # the engine's seconds spent ingesting so far (finished calls)
    summarizing_s: float = 0.0  # and summarizing

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def sample_of(doc: dict[str, Any], at_s: float, sent: int, rss_bytes: int | None) -> Sample:
    """A Sample from one status document."""
    source = doc.get("sources", {}).get(ACKED_SOURCE, {})
    lag, engine = doc.get("lag", {}), doc.get("engine", {})
    busy = engine.get("busy_s", {})
    oldest = lag.get("oldest_unread_s")
    return Sample(
        at_s=round(at_s, 3),
        sent=sent,
        received=int(source.get("received", 0)),
        ingested=int(source.get("ingested", 0)),
        queue_depth=int(doc.get("queue", {}).get("depth", 0)),
        oldest_unread_s=float(oldest or 0.0),
        keeps_up=bool(lag.get("keeps_up", True)),
        tokens_per_s=float(doc.get("tokens", {}).get("per_second_1m", 0.0)),
        doing=str(engine.get("doing", "?")),
        doing_for_s=float(engine.get("for_s", 0.0)),
        summaries=int(doc.get("summaries", {}).get("emitted", 0)),
        rss_bytes=rss_bytes,
        ingesting_s=float(busy.get("ingesting", 0.0)),
        summarizing_s=float(busy.get("summarizing", 0.0)),
    )


def engine_shares(samples: Sequence[Sample]) -> dict[str, float | None]:
    """The share of the time between the first and the last sample that the engine spent
    ingesting and summarizing: near 1 together, it has no time to spare, and the queue
    grows whatever the lag says so far."""
    if len(samples) < 2 or samples[-1].at_s <= samples[0].at_s:
        return {"ingesting": None, "summarizing": None, "busy": None}
    first, last = samples[0], samples[-1]
    span = last.at_s - first.at_s
    ingesting = (last.ingesting_s - first.ingesting_s) / span
    summarizing = (last.summarizing_s - first.summarizing_s) / span
    shares = {"ingesting": ingesting, "summarizing": summarizing}
    shares["busy"] = ingesting + summarizing
    return {name: round(value, 4) for name, value in shares.items()}


def progress_line(sample: Sample) -> str:
    """One line every 30 s: how far the feed got and how the daemon keeps up."""
    rss = "" if sample.rss_bytes is None else f", RSS {sample.rss_bytes / 2**20:.0f} MiB"
    return (
        f"{sample.at_s:.0f} s: sent {sample.sent}, ingested {sample.ingested}, "
        f"queue {sample.queue_depth}, lag {sample.oldest_unread_s:.1f} s, "
        f"{sample.summaries} summaries, {sample.tokens_per_s:.0f} tok/s, "
        f"engine {sample.doing} for {sample.doing_for_s:.0f} s{rss}"
    )
