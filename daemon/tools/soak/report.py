"""The soak's result: the reconciliation table for people, the same as JSON for programs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .liveness import Liveness
from .payloads import Kind
from .reconcile import Check, SourceReport, Trend

MIB = 2**20
COLUMNS = (
    "source", "delivery", "sent", "received", "dup", "ingested", "dropped", "rejected", "queued",
)  # fmt: skip


@dataclass(frozen=True)
class Faults:
    broker_restarts: int
    daemon_kills: int
    resubscribed_after_s: tuple[float, ...]  # per broker restart: until the daemon's link was up
    ready_after_s: tuple[float, ...]  # per daemon start: until it answered "ready"
    daemon_sigterms: int = 0


@dataclass(frozen=True)
class Summaries:
    jsonl_lines: int
    last_run_lines: int  # written by the last daemon run (its earlier runs were cut short)
    emitted: int  # by the last daemon run, from its status
    at_shutdown: int
    # Records whose seq an earlier record has (a check: a restarted daemon numbers on
    # from the JSONL's last record, so this stays 0).
    repeated_seq: int = 0


@dataclass(frozen=True)
class Memory:
    rss: tuple[Trend, ...]
    peak_rss_by_run: Mapping[int, int]  # VmHWM
    gpu: tuple[Trend, ...]  # empty without a GPU
    warmup_s: float
    bound: float


@dataclass(frozen=True)
class SoakResult:
    settings: Mapping[str, Any]
    elapsed_s: float
    sources: tuple[SourceReport, ...]
    summaries: Summaries
    faults: Faults
    memory: Memory
    daemon_exit_code: int
    checks: tuple[Check, ...]  # the counts: sources, summaries, faults, liveness
    memory_checks: tuple[Check, ...]
    liveness: Liveness | None = None

    @property
    def reconciled(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def memory_flat(self) -> bool:
        return all(check.ok for check in self.memory_checks)

    @property
    def ok(self) -> bool:
        return self.reconciled and self.memory_flat

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reconciled": self.reconciled,
            "memory_flat": self.memory_flat,
            "settings": dict(self.settings),
            "elapsed_s": round(self.elapsed_s, 1),
            "sources": {report.source: report.as_json() for report in self.sources},
            "summaries": self.summaries.__dict__,
            "restarts": {
                "broker": self.faults.broker_restarts,
                "daemon_sigterm": self.faults.daemon_sigterms,
                "daemon_sigkill": self.faults.daemon_kills,
                "resubscribed_after_s": list(self.faults.resubscribed_after_s),
                "ready_after_s": list(self.faults.ready_after_s),
            },
            "memory": {
                "warmup_s": self.memory.warmup_s,
                "bound": self.memory.bound,
                "rss": [t.as_json() for t in self.memory.rss],
                "peak_rss_bytes_by_run": {
                    str(run + 1): peak for run, peak in self.memory.peak_rss_by_run.items()
                },
                "gpu": [t.as_json() for t in self.memory.gpu] or None,
            },
            "liveness": None if self.liveness is None else self.liveness.as_json(),
            "daemon_exit_code": self.daemon_exit_code,
            "checks": [check.__dict__ for check in (*self.checks, *self.memory_checks)],
        }


# --- the table ----------------------------------------------------------------------------


def _aligned(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _counts_table(sources: Sequence[SourceReport]) -> list[str]:
    rows = [list(COLUMNS)]
    for r in sources:
        c = r.counts
        rows.append([
            r.source, str(r.delivery), str(r.sent_total), str(c.received), str(r.duplicates),
            str(c.ingested), str(c.dropped_total), str(c.rejected_total), str(c.queued),
        ])  # fmt: skip
    return _aligned(rows)


def _kinds_table(sources: Sequence[SourceReport]) -> list[str]:
    rows = [["sent by kind", *[str(kind) for kind in Kind]]]
    rows += [[r.source, *[str(r.sent.get(kind, 0)) for kind in Kind]] for r in sources]
    return _aligned(rows)


def _reasons(by_reason: Mapping[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(by_reason.items())) or "none"


def _reason_lines(sources: Sequence[SourceReport]) -> list[str]:
    lines = []
    for r in sources:
        never = sum(r.never_received.values())
        refused = f"; {never} blobs refused by libzmq, never received" if never else ""
        lines.append(f"{r.source}: rejected {_reasons(r.counts.rejected)}{refused}")
        lines.append(f"{r.source}: dropped {_reasons(r.counts.dropped)}")
        lines.append(f"{r.source}: repaired {_reasons(r.counts.repaired)}")
    return lines


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}"


def _trend_lines(name: str, trends: Sequence[Trend]) -> list[str]:
    lines = []
    for t in trends:
        ratio = "too short to judge" if t.ratio is None else f"x{t.ratio:.3f}"
        slices = " ".join(_mib(p) for p in t.slice_peaks)
        lines.append(
            f"{name} run {t.run + 1}: first third {_mib(t.first_peak)} MiB, last third "
            f"{_mib(t.last_peak)} MiB ({ratio}); per slice: {slices}"
        )
    return lines


def render_table(result: SoakResult) -> str:
    s, f, m = result.settings, result.faults, result.memory
    lines = [
        f"streamd soak: {result.elapsed_s:.0f} s, model {s['model']} on {s['device']}, "
        f"{s['senders']} acked ZeroMQ + {s['senders']} MQTT senders at {s['rate']:g} msg/s "
        f"each, {s['malformed']:.0%} malformed, {s['blobs']} MQTT blobs of "
        f"{s['blob_bytes'] / 1e6:g} MB",
        "",
        *_counts_table(result.sources),
        "",
        *_kinds_table(result.sources),
        "",
        *_reason_lines(result.sources),
        "",
        f"summaries: {result.summaries.jsonl_lines} JSONL lines; the last run wrote "
        f"{result.summaries.last_run_lines} = {result.summaries.emitted} emitted + "
        f"{result.summaries.at_shutdown} at shutdown"
        + (
            f"; {result.summaries.repeated_seq} seq numbers written twice"
            if result.summaries.repeated_seq
            else ""
        ),
        f"restarts: broker {f.broker_restarts} (daemon re-subscribed after "
        f"{_seconds(f.resubscribed_after_s)}), daemon SIGTERM {f.daemon_sigterms} and "
        f"SIGKILL {f.daemon_kills} mid-flood (ready after {_seconds(f.ready_after_s)})",
        f"memory after a {m.warmup_s:g} s warm-up, peak RSS in MiB (bound x{m.bound:g}):",
        *["  " + line for line in _trend_lines("RSS", m.rss)],
        "  peak RSS (VmHWM) by run: "
        + ", ".join(f"run {run + 1} {_mib(peak)} MiB" for run, peak in m.peak_rss_by_run.items()),
        *(["  " + line for line in _trend_lines("GPU", m.gpu)] or ["  GPU memory: none (CPU)"]),
        f"daemon exit code at the end (SIGTERM): {result.daemon_exit_code}",
        "",
        "checks:",
        *[
            f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}"
            for c in (*result.checks, *result.memory_checks)
        ],
        "",
        _verdict(result),
    ]
    return "\n".join(lines)


def _seconds(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.1f} s" for v in values) or "-"


def _verdict(result: SoakResult) -> str:
    if result.ok:
        return "RECONCILED, memory flat"
    parts = [
        "reconciled" if result.reconciled else "NOT RECONCILED",
        "memory flat" if result.memory_flat else "MEMORY GREW",
    ]
    return ", ".join(parts)
