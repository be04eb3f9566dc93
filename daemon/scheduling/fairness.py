"""How the engine's time is shared between ingest and summaries, and how far behind the
stream it is (event loop side; plain arithmetic, no torch, no asyncio).

On a CPU one summary can take longer than the summary period itself: a seconds trigger
that fired again at once let summaries take most of the engine's time while the queue
grew (issue #11, observation 6). So while ingest is behind (text waits in the queue),
a triggered summary may start only once ingest has had its share of engine time since
the last one: after a summary of d seconds, ingest gets d * (1 - share) / share seconds
first (share 0.25: three times as long). A queue that empties lifts the limit: nothing
waits. A summary asked for (`streamd summarize`, the shutdown) is never held back, but
its time counts.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

# The loop has no tokenizer; English log text runs about 4 characters per token.
CHARS_PER_TOKEN = 4


class SummaryShare:
    """The share rule above, in engine seconds (EngineThread's busy totals)."""

    def __init__(self) -> None:
        self._ingest_due_s = 0.0  # ingest busy total the next triggered summary waits for

    def allows(self, share: float, behind: bool, ingest_s: float) -> bool:
        """Whether a triggered summary may start now."""
        return not behind or share >= 1 or ingest_s >= self._ingest_due_s

    def spent(self, share: float, summary_s: float, ingest_s: float) -> None:
        """A summary took summary_s seconds of engine time; ingest had ingest_s so far."""
        if share < 1:
            owed = summary_s * (1 - share) / share
            self._ingest_due_s = max(self._ingest_due_s, ingest_s) + owed

    def owed_s(self, ingest_s: float) -> float:
        """Ingest seconds still owed before a triggered summary may start while behind."""
        return max(0.0, self._ingest_due_s - ingest_s)


class QueueView(Protocol):
    """The ingest queue, as far as the lag is concerned."""

    @property
    def depth(self) -> int: ...
    @property
    def chars(self) -> int: ...
    def oldest_arrival(self) -> float | None: ...


def lag_status(
    queue: QueueView, max_lag_s: float, batch_since: float | None = None
) -> dict[str, Any]:
    """How far behind the stream the engine is: the age of the oldest message not yet in
    the cache (queued, or in the batch the ingest loop took, which may wait on the engine
    thread behind a summary: batch_since is its oldest message's arrival), what waits in
    the queue, and whether it keeps up (that age is at most max_lag_s)."""
    arrivals = [t for t in (queue.oldest_arrival(), batch_since) if t is not None]
    oldest = since(min(arrivals)) if arrivals else None
    return {
        "oldest_unread_s": None if oldest is None else round(oldest, 3),
        "queued_messages": queue.depth,
        "queued_chars": queue.chars,
        "queued_tokens_estimate": queue.chars // CHARS_PER_TOKEN,
        "max_lag_s": max_lag_s,
        "keeps_up": oldest is None or oldest <= max_lag_s,
    }


def since(moment: float) -> float:
    """Seconds from a time.monotonic() moment to now."""
    return max(0.0, time.monotonic() - moment)
