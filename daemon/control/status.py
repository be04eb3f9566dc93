"""The `status` document (built in the daemon, from the engine, queue and metrics) and
its table for people (rendered by the CLI)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .engine_text import engine_text, lag_text

if TYPE_CHECKING:  # the CLI imports this module for the table: keep it light
    from ..intake.ingest import IngestQueue
    from ..metrics import Histogram, StreamdMetrics
    from ..scheduling.scheduler import Engine
    from ..wiring import Outputs

STARTING, READY, STOPPING = "starting", "ready", "stopping"


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
    return {
        "state": state,
        "pid": os.getpid(),
        "uptime_s": round(uptime_s, 3),
        "model": stats.model if stats else config.model.name,
        "device": stats.device if stats else config.model.device,
        "dtype": stats.dtype if stats else config.model.dtype,
        "decode": stats.decode if stats else None,
        "gpu": gpu,
        "cache": _cache(engine),
        "tokens": {
            "ingested": stats.tokens_ingested if stats else 0,
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
            "prefill_chunk_s": _quantiles(metrics.prefill_chunk),
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
        f"{stats.tokens_ingested} tokens in, {engine.rate.per_second():.0f} tok/s, "
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
            "bytes": 0,
            "usage_perc": 0.0,
        }
    return {
        "max_capacity": stats.max_capacity,
        "used": stats.used,
        "pinned": stats.pinned,
        "window": stats.window,
        "chunk": stats.chunk,
        "bytes": stats.cache_bytes,
        "usage_perc": round(100 * stats.used / stats.max_capacity, 2),
    }


def _summaries(engine: Engine, metrics: StreamdMetrics) -> dict[str, Any]:
    last = engine.last_summary_epoch_s
    claims = _by_label(metrics.summary_claims.values())
    checked = claims.get("supported", 0) + claims.get("unsupported", 0)
    return {
        "emitted": engine.summaries_emitted,
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


def _claims_text(summaries: dict[str, Any]) -> str:
    ratio = summaries.get("claims_supported_ratio")
    if ratio is None:
        return "none checked yet"
    return (
        f"{summaries['claims_supported']} of {summaries['claims_checked']} supported "
        f"({100 * ratio:.0f}%), {summaries['sentences_removed']} sentences removed"
    )


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


# --- the table for people ------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "none yet"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def _gpu_line(gpu: dict[str, Any]) -> str:
    if not gpu.get("available"):
        return str(gpu.get("reason", "no GPU"))
    used, total = gpu["memory_used_bytes"] / 2**30, gpu["memory_total_bytes"] / 2**30
    return f"{gpu['name']}: {used:.1f} / {total:.1f} GiB, {gpu['utilization_perc']}% busy"


def _reasons(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(by_reason.items()))


def _source_lines(sources: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    rows = []
    for name, row in sorted(sources.items()):
        text = (
            f"received {row['received']}, ingested {row.get('ingested', 0)}, "
            f"rejected {row['rejected']}, dropped {row['dropped']}"
        )
        details = _reasons(row.get("rejected_by_reason", {}) | row.get("dropped_by_reason", {}))
        repaired = _reasons(row.get("repaired_by_kind", {}))
        text += f" ({details})" if details else ""
        text += f"; repaired: {repaired}" if repaired else ""
        rows.append((f"  {name}", text))
    return rows or [("  (none)", "")]


def render_status_table(doc: dict[str, Any]) -> str:
    cache, tokens, summaries = doc["cache"], doc["tokens"], doc["summaries"]
    latency = doc["latency"]
    every = f"every {summaries['every_tokens']} tokens / {summaries['every_seconds']:g} s"
    rows = [
        ("state", f"{doc['state']} (up {doc['uptime_s']:.0f} s, pid {doc['pid']})"),
        ("model", f"{doc['model']} on {doc['device']} ({doc['dtype']})"),
        ("decode", doc["decode"] or "-"),
        ("gpu", _gpu_line(doc["gpu"])),
        (
            "cache",
            f"{cache['used']} / {cache['max_capacity']} slots used "
            f"(pinned {cache['pinned']} + window {cache['window']}), "
            f"{cache['bytes'] / 2**20:.1f} MiB",
        ),
        (
            "tokens",
            f"{tokens['ingested']} ingested ({tokens['per_second_1m']:.0f} tok/s, 1 min), "
            f"{tokens['evicted']} evicted",
        ),
        ("queue", f"{doc['queue']['depth']} messages waiting"),
        ("engine", engine_text(doc.get("engine"))),
        ("lag", lag_text(doc.get("lag"))),
        (
            "summaries",
            f"{summaries['emitted']} emitted, {summaries['skipped']} skipped (nothing new), "
            f"{_scheduling_counts(summaries)}last {_age(summaries['last_age_s'])} ({every})",
        ),
        ("claims", _claims_text(summaries)),
        ("prefill", _latency_text(latency["prefill_chunk_s"])),
        ("TTFT", _latency_text(latency["summary_ttft_s"])),
        ("TPOT", _latency_text(latency["summary_tpot_s"])),
        ("snapshot", _snapshot_line(doc.get("snapshot"))),
        ("spool", _spool_line(doc.get("spool"))),
        ("outputs", _outputs_line(doc)),
        ("sources", ""),
        *_source_lines(doc["sources"]),
    ]
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


def _outputs_line(doc: dict[str, Any]) -> str:
    """Each output, with what it is behind on: "stdout (16 queued, 12 dropped), jsonl"."""
    queues = doc.get("output_queues", {})
    parts = []
    for name in doc["outputs"]:
        counts = queues.get(name, {})
        behind = [f"{counts[k]} {k}" for k in ("queued", "dropped") if counts.get(k)]
        parts.append(f"{name} ({', '.join(behind)})" if behind else name)
    return ", ".join(parts) or "none"


def _scheduling_counts(summaries: dict[str, Any]) -> str:
    """'2 merged, 1 held back, 1 cut by its time budget, ' where not zero."""
    words = {"merged": "merged", "held_back": "held back", "time_limited": "cut by time"}
    counts = [f"{summaries[key]} {text}" for key, text in words.items() if summaries.get(key)]
    return "".join(f"{count}, " for count in counts)


def _snapshot_line(snapshot: dict[str, Any] | None) -> str:
    if not snapshot or not snapshot["enabled"]:
        return "off"
    age = snapshot["last_age_s"]
    text = "none written yet" if age is None else f"last {_age(age)}"
    if snapshot.get("up_to_date"):
        text += " (nothing new since)"
    if snapshot["failed"]:
        text += f", {snapshot['failed']} failed writes"
    resumed = snapshot.get("resumed")
    if resumed:
        text += f"; resumed {resumed['window_tokens']} window tokens at start"
    for problem in (snapshot.get("problem"), snapshot.get("write_error")):
        if problem:
            text += f"; {problem}"
    return text


def _spool_line(spool: dict[str, Any] | None) -> str:
    if not spool or not spool.get("enabled"):
        return "off"
    text = (
        f"{spool['records']} messages not yet in a snapshot, {spool['bytes'] / 2**20:.1f} / "
        f"{spool['max_bytes'] / 2**20:.0f} MiB, oldest {_age(spool['oldest_age_s'])}"
    )
    if spool["replayed"]:
        text += f"; replayed {spool['replayed']} at start"
    if spool["skipped_bytes"]:
        text += f"; {spool['skipped_bytes']} torn/damaged bytes skipped at start"
    if spool["last_error"]:
        text += f"; {spool['errors']} failed writes, last: {spool['last_error']}"
    return text


def _latency_text(q: dict[str, Any]) -> str:
    return f"p50 {_ms(q['p50'])}, p99 {_ms(q['p99'])} ({q['count']} observed)"
