"""What the engine has taken in and written, as `status` counts it: stream tokens and the
chunks that carried them (as each forward finishes), the ingest rate, and the summaries
of this process beside those of the runs before it (#11, observation 14)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

RATE_WINDOW_S = 60.0  # `status` shows the ingest rate over the last minute
RATE_STEP_S = 0.1  # chunks prefilled within this are one event of the rate window


class RateWindow:
    """Tokens per second over the last window_s seconds. Added to on the engine thread as
    each chunk is prefilled (with the token count beside it), read on the event loop."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._since = time.monotonic()
        self._events: deque[tuple[float, int]] = deque()  # (time, tokens) per RATE_STEP_S
        self._lock = threading.Lock()

    def reset(self) -> None:
        """Start the window now (when the model is loaded: loading is not ingest time)."""
        with self._lock:
            self._since = time.monotonic()
            self._events.clear()

    def add(self, tokens: int) -> None:
        now = time.monotonic()
        with self._lock:
            if self._events and now - self._events[-1][0] < RATE_STEP_S:
                tokens += self._events.pop()[1]  # one event per step, however small the chunks
            self._events.append((now, tokens))

    def per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()
            total = sum(tokens for _, tokens in self._events)
            # In the first minute, divide by the time that has passed, not a whole minute.
            span = min(self.window_s, max(now - self._since, 1e-3))
        return total / span


@dataclass(frozen=True)
class Prefilled:
    """Stream chunks prefilled by this process and their tokens, counted together."""

    chunks: int = 0
    tokens: int = 0


class IngestTally:
    """Stream tokens as each chunk's forward finishes. `status` showed '0 ingested' beside
    'prefill (300 observed)': the chunk latency was observed per chunk, the token count
    only when the engine call returned. The engine thread replaces `prefilled` whole (one
    writer), so the event loop never reads the chunks of one moment beside the tokens of
    another. A re-prefilled snapshot window is not ingest: it is in `before_start`."""

    def __init__(self) -> None:
        self.before_start = 0  # stream tokens of earlier runs (a resumed snapshot's)
        self.prefilled = Prefilled()

    def add(self, tokens: int) -> None:  # on the engine thread, as a chunk's forward ends
        now = self.prefilled
        self.prefilled = Prefilled(now.chunks + 1, now.tokens + tokens)

    def started_at(self, tokens_ingested: int) -> None:
        """The session as loaded or resumed, before any ingest of this process."""
        self.before_start = tokens_ingested - self.prefilled.tokens

    @property
    def total(self) -> int:
        """Stream tokens since the stream began, this chunk included."""
        return self.before_start + self.prefilled.tokens


def epoch_of(stamp: object) -> float | None:
    """utc_timestamp()'s text back to Unix time; None for anything else."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def utc_timestamp(epoch_s: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class SummaryTally:
    """The summary numbering and the last summary, which go on over restarts (from the
    snapshot, or the summary file's last record), beside what this process wrote: status
    said '3 emitted, last none yet' after a restart."""

    def __init__(self) -> None:
        self.emitted = 0  # seq of the last summary record, over restarts
        self.since_start = 0  # written by this process
        self.last_epoch_s: float | None = None
        self.last: dict[str, Any] | None = None  # the latest record's JSON (snapshots)

    def wrote(self, record: dict[str, Any], epoch_s: float) -> None:
        self.emitted = int(record["seq"])
        self.since_start += 1
        self.last, self.last_epoch_s = record, epoch_s

    def go_on_from(self, seq: int, record: dict[str, Any] | None) -> None:
        """Summaries before this start: the snapshot's, or the summary file's last record,
        whichever is newer (a summary written after the last snapshot, then a SIGKILL)."""
        if seq < self.emitted or self.since_start:
            return
        self.emitted = seq
        if record is not None:
            self.last, self.last_epoch_s = record, epoch_of(record.get("time"))

    @property
    def last_before_start(self) -> bool:
        """The last summary was written by an earlier run of the daemon."""
        return self.since_start == 0 and self.emitted > 0
