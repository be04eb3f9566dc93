"""What the engine is doing and how far behind the stream it is, for `status` (the
`engine` and `lag` sections) and for Prometheus (SchedulingMetrics' gauges). Read on the
event loop from plain values: never by waiting on the engine."""

from __future__ import annotations

from typing import Any

from ..config import Config
from .engine_thread import ACTIVITIES, INGESTING, SUMMARIZING, EngineThread
from .gauges import SchedulingMetrics
from .summary_gate import SummaryGate


def engine_status(thread: EngineThread, gate: SummaryGate, config: Config) -> dict[str, Any]:
    """doing (idle, ingesting, summarizing, tuning, ...) and for how long; the engine
    seconds by activity (finished calls) and the share summaries took of ingest plus
    summaries; triggered summaries held back by that share, and the ingest seconds
    still owed before the next may start while ingest is behind."""
    doing = thread.doing
    busy = thread.busy_s()
    both = busy[SUMMARIZING] + busy[INGESTING]
    return {
        "doing": doing.activity,
        "for_s": round(doing.for_s(), 3),
        "summary_trigger": gate.trigger,  # of the summary in flight, if one is
        "busy_s": {activity: round(seconds, 3) for activity, seconds in busy.items()},
        "summary_share": round(busy[SUMMARIZING] / both, 4) if both else None,
        "summary_share_max": config.engine.summary_share,
        "summaries_held_back": sorted(gate.deferred),
        "ingest_owed_s": round(gate.owed_s(), 3),
    }


class Gauges:
    """Copies the engine's activity, busy time and lag into the metrics."""

    def __init__(self, thread: EngineThread, metrics: SchedulingMetrics) -> None:
        self._thread = thread
        self._metrics = metrics
        self._counted = dict.fromkeys(ACTIVITIES, 0.0)  # busy seconds already in the counter

    def refresh(self, lag: dict[str, Any]) -> None:
        """`lag`: fairness.lag_status's document, just made."""
        m = self._metrics
        doing = self._thread.doing
        for activity in ACTIVITIES:
            m.engine_activity.set(1.0 if activity == doing.activity else 0.0, activity=activity)
        m.engine_activity_seconds.set(doing.for_s())
        for activity, seconds in self._thread.busy_s().items():
            if seconds > self._counted[activity]:
                m.engine_busy.inc(seconds - self._counted[activity], activity=activity)
                self._counted[activity] = seconds
        m.lag.set(lag["oldest_unread_s"] or 0.0)
        m.queue_chars.set(lag["queued_chars"])
        m.queue_tokens.set(lag["queued_tokens_estimate"])
        m.keeping_up.set(1.0 if lag["keeps_up"] else 0.0)
