"""The shutdown's time budget (shutdown.timeout_seconds) and the final summary within it.

SIGTERM once took 66-121 s to exit, past the unit's TimeoutStopSec=60 (issue #11,
observation 8): a summary running on a CPU was awaited whole, then the final summary had
30 s of its own, then the snapshot waited for both. Now the summary running is cut short
at the signal (it ends at its last whole sentence and is published), and every step
gets what the budget has left, less what the steps after it need.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from .scheduling.scheduler import Engine

log = structlog.get_logger(__name__)

# Kept for the last steps (the snapshot, closing outputs and the control socket, joining
# the engine thread) out of shutdown.timeout_seconds.
CLOSING_RESERVE_S = 3.0
MIN_FINAL_SUMMARY_S = 1.0  # less time than this left: no final summary (logged)


class StopClock:
    """The budget, from the first signal: each step asks what is left for it."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self._began = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def left(self, keep_s: float = CLOSING_RESERVE_S) -> float:
        """Seconds left once `keep_s` is kept for the steps after this one (never < 0)."""
        return max(0.0, self.budget_s - self.elapsed() - keep_s)


async def final_summary(engine: Engine, clock: StopClock, limit_s: float) -> None:
    """A final summary within limit_s (shutdown.final_summary_seconds) and what the budget
    has left: short (it ends at its last whole sentence when time is up), or none, logged.
    Failures are logged: the shutdown goes on."""
    seconds = min(limit_s, clock.left())
    if seconds < MIN_FINAL_SUMMARY_S:
        why = "turned off" if not limit_s else "no time left for one in the shutdown budget"
        log.warning(
            f"no final summary: {why}",
            left_s=round(seconds, 3),
            final_summary_seconds=limit_s,
            budget_s=clock.budget_s,
        )
        return
    try:
        # The summary stops itself at its deadline; this bounds only what cannot be cut
        # (a forward pass in progress), keeping a second for closing.
        await asyncio.wait_for(engine.summarize("shutdown", seconds), max(seconds, clock.left(1.0)))
    except TimeoutError:
        engine.gate.cut_short()
        log.warning("no final summary: it took longer than allowed", limit_s=round(seconds, 3))
    except Exception:
        log.exception("no final summary")
