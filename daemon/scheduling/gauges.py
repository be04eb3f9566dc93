"""The metrics of engine time and lag (StreamdMetrics.scheduling): what the engine is
doing, how far behind the stream it is, and what became of summary triggers. Gauges are
refreshed by the scheduler about once a second, and whenever `status` is asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class _Registry(Protocol):
    """daemon/metrics.py's Registry, as far as these metrics use it (named here, not
    imported: metrics.py builds SchedulingMetrics)."""

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ...) -> Any: ...
    def counter(self, name: str, help_text: str, labels: Sequence[str] = ...) -> Any: ...


class SchedulingMetrics:
    def __init__(self, r: _Registry) -> None:
        self.engine_activity = r.gauge(
            "streamd_engine_activity",
            "1 for what the engine thread is doing now (idle, ingesting, summarizing, tuning, "
            "snapshot, loading, resuming), 0 for the others.",
            ["activity"],
        )
        self.engine_activity_seconds = r.gauge(
            "streamd_engine_activity_seconds", "How long the engine has been doing it."
        )
        self.engine_busy = r.counter(
            "streamd_engine_busy_seconds_total",
            "Engine thread time by activity: summarizing over summarizing + ingesting is the "
            "share summaries take.",
            ["activity"],
        )
        self.lag = r.gauge(
            "streamd_ingest_lag_seconds",
            "How long the oldest unread message has waited in the ingest queue (0: none).",
        )
        self.queue_chars = r.gauge("streamd_queue_chars", "Characters waiting in the queue.")
        self.queue_tokens = r.gauge(
            "streamd_queue_tokens_estimate", "Tokens waiting in the queue, estimated (4 chars)."
        )
        self.keeping_up = r.gauge(
            "streamd_keeping_up",
            "1 while the oldest unread message is younger than engine.max_lag_seconds.",
        )
        self.summaries_merged = r.counter(
            "streamd_summaries_merged_total",
            "Summary triggers that fired while a summary was running, merged into it, by trigger.",
            ["trigger"],
        )
        self.summaries_deferred = r.counter(
            "streamd_summaries_deferred_total",
            "Triggered summaries held back while ingest was behind and summaries had had "
            "their share of engine time (engine.summary_share), by trigger.",
            ["trigger"],
        )
        self.summaries_time_limited = r.counter(
            "streamd_summaries_time_limited_total",
            "Summaries stopped by their time budget (summary.max_seconds, or the shutdown's).",
        )
