"""`streamd status` as a table for people (the CLI renders it from the status document);
every row says what its numbers count, so no two rows read as contradicting each other
(#11, observation 14)."""

from __future__ import annotations

from typing import Any

from .engine_text import doing_text, engine_text, lag_text, seconds_text


def _claims_text(summaries: dict[str, Any]) -> str:
    ratio = summaries.get("claims_supported_ratio")
    if ratio is None:
        return "none checked yet"
    return (
        f"{summaries['claims_supported']} of {summaries['claims_checked']} supported "
        f"({100 * ratio:.0f}%), {summaries['sentences_removed']} sentences removed"
    )


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


def _refresh_text(cache: dict[str, Any]) -> str:
    every = cache.get("refresh_every", 0)
    if not every:
        return "window refresh off"
    return f"window refreshed every {every} tokens ({cache.get('refreshes', 0)} so far)"


def render_status_table(doc: dict[str, Any]) -> str:
    cache, tokens, summaries = doc["cache"], doc["tokens"], doc["summaries"]
    latency = doc["latency"]
    every = f"every {summaries['every_tokens']} tokens / {summaries['every_seconds']:g} s"
    rows = [
        ("state", f"{doc['state']} (up {doc['uptime_s']:.0f} s, pid {doc['pid']})"),
        ("model", f"{doc['model']} on {doc['device']} ({doc['dtype']}{_threads(doc)})"),
        ("decode", doc["decode"] or "-"),
        ("gpu", _gpu_line(doc["gpu"])),
        (
            "cache",
            f"{cache['used']} / {cache['max_capacity']} slots used "
            f"(pinned {cache['pinned']} + window {cache['window']}), "
            f"{cache['bytes'] / 2**20:.1f} MiB, {_refresh_text(cache)}",
        ),
        ("tokens", _tokens_text(tokens)),
        ("queue", f"{doc['queue']['depth']} messages waiting"),
        ("engine", engine_text(doc.get("engine"))),
        ("lag", lag_text(doc.get("lag"))),
        (
            "summaries",
            f"{_emitted_text(summaries)}, {summaries['skipped']} skipped (nothing new), "
            f"{_scheduling_counts(summaries)}last {_last_text(summaries)} ({every})",
        ),
        ("claims", _claims_text(summaries)),
        ("ingest chunk", _chunks_text(latency["prefill_chunk_s"])),
        ("summary TTFT", _latency_text(latency["summary_ttft_s"], "summaries")),
        ("summary TPOT", _latency_text(latency["summary_tpot_s"], "summaries")),
        ("snapshot", _snapshot_line(doc.get("snapshot"), doc.get("engine"))),
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


def _tokens_text(tokens: dict[str, Any]) -> str:
    """'1200 ingested (300 since start, 25 tok/s, 1 min), 950 evicted'; 'since start' only
    where a resumed snapshot's tokens make the two differ."""
    since = tokens.get("ingested_since_start", tokens["ingested"])
    start = f"{since} since start, " if since != tokens["ingested"] else ""
    return (
        f"{tokens['ingested']} ingested ({start}{tokens['per_second_1m']:.0f} tok/s, 1 min), "
        f"{tokens['evicted']} evicted"
    )


def _chunks_text(q: dict[str, Any]) -> str:
    """The stream chunks' prefill latency, with what it counted: 'p50 1.2 ms, p99 3.0 ms
    per chunk (30 chunks, 1800 tokens since start)'."""
    tokens = q.get("tokens")
    counted = f"{q['count']} chunks" + ("" if tokens is None else f", {tokens} tokens")
    return f"p50 {_ms(q['p50'])}, p99 {_ms(q['p99'])} per chunk ({counted} since start)"


def _emitted_text(summaries: dict[str, Any]) -> str:
    """'3 emitted (1 since start)' where earlier runs wrote some."""
    since = summaries.get("emitted_since_start", summaries["emitted"])
    start = f" ({since} since start)" if since != summaries["emitted"] else ""
    return f"{summaries['emitted']} emitted{start}"


def _last_text(summaries: dict[str, Any]) -> str:
    """'12 s ago', '5 min ago (before restart)', 'none yet'."""
    age = summaries["last_age_s"]
    if not summaries.get("last_before_restart"):
        return _age(age)
    return "before restart" if age is None else f"{_age(age)} (before restart)"


def _snapshot_line(snapshot: dict[str, Any] | None, engine: dict[str, Any] | None = None) -> str:
    if not snapshot or not snapshot["enabled"]:
        return "off"
    age = snapshot["last_age_s"]
    text = "none written yet" if age is None else f"last {_age(age)}"
    if snapshot.get("up_to_date"):
        text += " (nothing new since)"
    elif snapshot.get("due"):  # older than its interval, and why
        text += f" (due: {_taking_text(snapshot, engine)})"
    if snapshot["failed"]:
        text += f", {snapshot['failed']} failed writes"
    resumed = snapshot.get("resumed")
    if resumed:
        text += f"; resumed {resumed['window_tokens']} window tokens at start"
    for problem in (snapshot.get("problem"), snapshot.get("write_error")):
        if problem:
            text += f"; {problem}"
    return text


def _taking_text(snapshot: dict[str, Any], engine: dict[str, Any] | None) -> str:
    """Why a due snapshot is not written yet: the timer's next look, or the engine."""
    if snapshot.get("taking_for_s") is None:
        return "taken within a second"
    doing = (engine or {}).get("doing")
    if doing is None or doing == "snapshot":
        return f"being taken for {seconds_text(snapshot['taking_for_s'])}"
    return f"waiting for the engine, {doing_text(engine or {})}"


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


def _latency_text(q: dict[str, Any], what: str) -> str:
    return f"p50 {_ms(q['p50'])}, p99 {_ms(q['p99'])} ({q['count']} {what})"


def _threads(doc: dict[str, Any]) -> str:
    """ ", 2 threads" on a CPU (a GPU's matmuls do not use them)."""
    threads = doc.get("threads")
    plural = "" if threads == 1 else "s"
    return f", {threads} thread{plural}" if threads and doc["device"] == "cpu" else ""
