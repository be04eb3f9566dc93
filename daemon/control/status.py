"""The `status` document (built in the daemon, from the engine, queue and metrics) and
its table for people (rendered by the CLI)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .status_table import render_status_table

if TYPE_CHECKING:  # the CLI imports this module for the table: keep it light
    from ..intake.ingest import IngestQueue
    from ..metrics import Histogram, StreamdMetrics
    from ..scheduling.scheduler import Engine
    from ..wiring import Outputs

STARTING, READY, STOPPING = "starting", "ready", "stopping"
__all__ = ["READY", "STARTING", "STOPPING", "one_line", "render_status_table", "status_document"]


def status_document(
    *,
    state: str,
    uptime_s: float,
    engine: Engine,
    queue: IngestQueue,
    metrics: StreamdMetrics,
    sources: Mapping[str, bool | None],
    outputs: Outputs,
    gpu: dict[str, Any],
    snapshot: dict[str, Any] | None = None,
    spool: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plain JSON. The keys other programs rely on (the issue's contract): state, model,
    cache{max_capacity, used, pinned, window, bytes}, tokens{ingested, evicted},
    summaries{emitted}, sources{name: {received, ingested, rejected, dropped, queued}},
    where per source received = ingested + dropped + rejected + queued once nothing is in
    flight on the engine thread. Each source also has rejected_by_reason,
    dropped_by_reason and repaired_by_kind ({replaced, stripped, cut}: what the decoder
    had to repair). Everything else is for people and may grow. Latencies are null until
    the first observation."""
    stats, config = engine.stats, engine.config
    # Tokens and chunks from one reading (the engine thread counts both per chunk):
    # 'ingested' beside the chunk latency's count never mixes two moments.
    before, prefilled = engine.tokens.before_start, engine.tokens.prefilled
    return {
        "state": state,
        "pid": os.getpid(),
        "uptime_s": round(uptime_s, 3),
        "model": stats.model if stats else config.model.name,
        "device": stats.device if stats else config.model.device,
        "dtype": stats.dtype if stats else config.model.dtype,
        "threads": stats.threads if stats else config.model.threads,
        "decode": stats.decode if stats else None,
        "gpu": gpu,
        "cache": _cache(engine),
        "tokens": {
            "ingested": before + prefilled.tokens,  # since the stream began
            "ingested_since_start": prefilled.tokens,  # by this process (not a resumed window)
            "evicted": stats.tokens_evicted if stats else 0,
            "per_second_1m": round(engine.rate.per_second(), 3),
            "unsummarized": engine.unsummarized_tokens,
        },
        "queue": {"depth": queue.depth, "chars": queue.chars, "max_chars": queue.max_chars},
        # What the engine does now and for how long; how far behind the stream it is.
        "engine": engine.activity(),
        "lag": engine.lag(queue),
        "summaries": _summaries(engine, metrics),
        "sources": _sources(metrics, sources, queue.queued_by_source()),
        "outputs": outputs.names,
        "output_queues": outputs.counts(),  # {output: {written, queued, dropped}}
        "latency": {
            # Stream chunks prefilled (ingest), never the system prompt or a summary's
            # request: count and tokens are this process's chunks and their tokens.
            "prefill_chunk_s": _quantiles(metrics.prefill_chunk)
            | {"count": prefilled.chunks, "tokens": prefilled.tokens},
            "summary_ttft_s": _quantiles(metrics.time_to_first_token),
            "summary_tpot_s": _quantiles(metrics.inter_token_latency),
        },
        "snapshot": snapshot,
        # The durable intake (daemon/intake/spool.py): per source, received + replayed =
        # ingested + dropped + rejected + queued + deferred (replayed_by_source, ...).
        "spool": spool,
        "errors": {
            "engine": _by_label(metrics.engine_errors.values()),
            "outputs": _by_label(metrics.output_errors.values()),
            # Failed prefills retried in smaller pieces: {recovered, failed}.
            "ingest_retries": _by_label(metrics.ingest_retries.values()),
        },
    }


def one_line(state: str, engine: Engine, queue: IngestQueue) -> str:
    """One line for systemd's STATUS=: what the engine does and how far behind it is come
    first ('ready' beside 0 tok/s said nothing of a summary running for 100 s)."""
    stats = engine.stats
    if stats is None:
        return f"{state}: loading {engine.config.model.name}"
    doing = engine.activity()
    oldest = engine.lag(queue)["oldest_unread_s"]
    lag = "nothing waits" if oldest is None else f"oldest unread {oldest:.0f} s"
    return (
        f"{state}: {doing['doing']} for {doing['for_s']:.0f} s, {lag}, "
        f"{engine.tokens.total} tokens in, {engine.rate.per_second():.0f} tok/s, "
        f"cache {stats.used}/{stats.max_capacity}, {engine.summaries_emitted} summaries, "
        f"queue {queue.depth}"
    )


def _by_label(values: Mapping[tuple[str, ...], float]) -> dict[str, int]:
    """{stage or output: count} from a one-label counter's series."""
    return {labels[0]: int(count) for labels, count in values.items()}


def _cache(engine: Engine) -> dict[str, Any]:
    stats = engine.stats
    if stats is None:  # still loading: what was asked for, nothing allocated yet
        capacity = engine.config.cache.max_capacity
        return {
            "max_capacity": capacity,
            "used": 0,
            "pinned": 0,
            "window": 0,
            "chunk": engine.config.cache.chunk,
            "refresh_every": 0,
            "refreshes": 0,
            "bytes": 0,
            "usage_perc": 0.0,
        }
    return {
        "max_capacity": stats.max_capacity,
        "used": stats.used,
        "pinned": stats.pinned,
        "window": stats.window,
        "chunk": stats.chunk,
        "refresh_every": stats.refresh_every,
        "refreshes": stats.refreshes,
        "bytes": stats.cache_bytes,
        "usage_perc": round(100 * stats.used / stats.max_capacity, 2),
    }


def _summaries(engine: Engine, metrics: StreamdMetrics) -> dict[str, Any]:
    last = engine.last_summary_epoch_s
    claims = _by_label(metrics.summary_claims.values())
    checked = claims.get("supported", 0) + claims.get("unsupported", 0)
    return {
        "emitted": engine.summaries_emitted,  # the last record's seq: over restarts
        "emitted_since_start": engine.summaries.since_start,
        # The last summary was written before this process started (from the snapshot or
        # the summary file): status said '3 emitted, last none yet' after a restart.
        "last_before_restart": engine.summaries.last_before_start,
        "skipped": sum(_by_label(metrics.summaries_skipped.values()).values()),
        "last_age_s": None if last is None else round(max(0.0, time.time() - last), 3),
        "every_tokens": engine.config.summary.every_tokens,
        "every_seconds": engine.config.summary.every_seconds,
        # The model's checkable claims (before drop-sentence) and how many were supported.
        "claims_checked": checked,
        "claims_supported": claims.get("supported", 0),
        "claims_supported_ratio": round(claims.get("supported", 0) / checked, 4)
        if checked
        else None,
        "sentences_removed": int(metrics.summary_sentences_removed.value()),
        # Triggers joined to a summary running, held back by the share, time budgets hit.
        "merged": _total(metrics.scheduling.summaries_merged.values()),
        "held_back": _total(metrics.scheduling.summaries_deferred.values()),
        "time_limited": int(metrics.scheduling.summaries_time_limited.value()),
        "max_seconds": engine.config.summary.max_seconds,
    }


def _total(values: Mapping[tuple[str, ...], float]) -> int:
    return int(sum(values.values()))


def _sources(
    metrics: StreamdMetrics, links: Mapping[str, bool | None], queued: Mapping[str, int]
) -> dict[str, Any]:
    """The counts, what the decoder repaired by kind, and "connected" and "reconnects"
    (lost links and failed attempts) for sources that hold a broker connection (MQTT)."""
    rows = counts_with_repairs(metrics, links, queued)
    for name, connected in links.items():
        if connected is not None:
            rows[name]["connected"] = connected
            rows[name]["reconnects"] = int(metrics.source_reconnects.value(source=name))
    return rows


def counts_with_repairs(
    metrics: StreamdMetrics, names: Iterable[str], queued: Mapping[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """source_counts, and per source what the decoder repaired (repaired_by_kind)."""
    rows = source_counts(metrics, names, queued)
    for row in rows.values():
        row["repaired_by_kind"] = {}
    for (source, kind), value in metrics.ingest_repaired.values().items():
        if source in rows:  # it is: a repaired message was received
            rows[source]["repaired_by_kind"][kind] = int(value)
    return rows


def source_counts(
    metrics: StreamdMetrics, names: Iterable[str], queued: Mapping[str, int] | None = None
) -> dict[str, dict[str, Any]]:
    """{source: {received, ingested, rejected, dropped, queued, rejected_by_reason,
    dropped_by_reason}}; every configured source is listed, counted or not."""
    rows: dict[str, dict[str, Any]] = {}

    def row(source: str) -> dict[str, Any]:
        empty = {"received": 0, "ingested": 0, "rejected": 0, "dropped": 0, "queued": 0}
        return rows.setdefault(source, empty | {"rejected_by_reason": {}, "dropped_by_reason": {}})

    for name in names:
        row(name)
    for field, counter in {
        "received": metrics.ingest_messages,
        "ingested": metrics.ingest_ingested,
    }.items():
        for (source,), value in counter.values().items():
            row(source)[field] = int(value)
    for source, count in (queued or {}).items():
        row(source)["queued"] = count
    by_reason = {"rejected": metrics.ingest_rejected, "dropped": metrics.ingest_dropped}
    for field, counter in by_reason.items():
        for (source, reason), value in counter.values().items():
            row(source)[field] += int(value)
            row(source)[f"{field}_by_reason"][reason] = int(value)
    return rows


def _quantiles(histogram: Histogram) -> dict[str, Any]:
    return {
        "p50": histogram.quantile(0.5),
        "p99": histogram.quantile(0.99),
        "count": histogram.count(),
    }
