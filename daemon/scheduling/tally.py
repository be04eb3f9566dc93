"""What the engine has taken in and written, as `status` counts it: the ingest rate, and
the summary records' timestamps."""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime

RATE_WINDOW_S = 60.0  # `status` shows the ingest rate over the last minute


class RateWindow:
    """Tokens per second over the last window_s seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._since = time.monotonic()
        self._events: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Start the window now (when the model is loaded: loading is not ingest time)."""
        self._since = time.monotonic()
        self._events.clear()

    def add(self, tokens: int) -> None:
        self._events.append((time.monotonic(), tokens))

    def per_second(self) -> float:
        now = time.monotonic()
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()
        # In the first minute, divide by the time that has passed, not a whole minute.
        span = min(self.window_s, max(now - self._since, 1e-3))
        return sum(tokens for _, tokens in self._events) / span


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
