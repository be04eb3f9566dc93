"""From the daemon runs' counters and the monitor's samples to the SoakResult's parts:
per-source reports, memory trends, fault checks."""

from __future__ import annotations

from typing import Any

from .daemon_runs import SOURCES, ZMQ_SOURCE, DaemonRun, must_spool
from .liveness import Liveness
from .monitor import Monitor, Sample
from .options import SoakOptions
from .reconcile import Check, Delivery, SourceReport, reconcile_source, total, trend
from .report import Memory


def source_reports(
    runs: list[DaemonRun],
    sent: dict[str, dict[str, int]],
    repairs_reported: bool,
    spooled: dict[str, int] | None = None,
) -> list[SourceReport]:
    """Per source: what was sent (by kind) against what the runs with known counts counted
    and, with `spooled` (the spool's lifetime totals), what the spool took over all runs."""
    reports = []
    complete = all(run.known for run in runs)
    must = must_spool(sent)
    for source in SOURCES:
        counts = total(run.counted(source) for run in runs if run.known)
        delivery = Delivery.EXACT if source == ZMQ_SOURCE else Delivery.AT_LEAST_ONCE
        both = None if spooled is None else (spooled.get(source, 0), must[source])
        reports.append(
            reconcile_source(
                source, delivery, sent[source], counts, {}, repairs_reported, both, complete
            )
        )
    return reports


def fault_checks(
    options: SoakOptions, done: tuple[int, int, int], exit_code: int, stop_codes: list[int]
) -> list[Check]:
    """done: (broker restarts, daemon SIGTERMs, daemon SIGKILLs) injected."""
    o = options
    planned = (o.broker_restarts, o.sigterms, o.sigkills)
    detail = (
        f"broker restarts {done[0]} of {planned[0]}, daemon SIGTERMs {done[1]} of "
        f"{planned[1]}, SIGKILLs {done[2]} of {planned[2]}"
    )
    codes = [*stop_codes, exit_code]
    return [
        Check("faults: every planned fault was injected", done == planned, detail),
        Check(
            "daemon: every SIGTERM exits 0",
            all(code == 0 for code in codes),
            "exit codes " + ", ".join(map(str, codes)),
        ),
    ]


def spool_check(state: dict[str, Any]) -> Check:
    """After the last stop: every message ever spooled was taken in (ingested, rejected or
    dropped) and is in the last snapshot, so the spool has nothing left to replay."""
    last = int(state.get("next_seq", 1)) - 1
    trimmed = int(state.get("trimmed_upto", 0))
    return Check(
        "spool: every message spooled was taken in before the last stop",
        bool(state) and trimmed == last,
        f"taken in and snapshotted up to {trimmed} of {last}" if state else "no spool state",
    )


def liveness_checks(options: SoakOptions, live: Liveness) -> list[Check]:
    gap = live.max_ping_gap_s
    missing = sum(1 for g in live.gaps_by_run if g is None)
    gap_ok = gap is not None and gap <= options.watchdog_s and not missing
    gap_detail = (
        f"longest gap {gap * 1000:.0f} ms" if gap is not None else "no pings"
    ) + f" (WatchdogSec {options.watchdog_s:g} s, pings every {options.watchdog_s / 2:g} s)"
    p99 = live.status_p99_s
    p99_ok = p99 is not None and p99 <= options.status_p99_s and not live.status_unanswered
    p99_detail = (
        f"{live.status_asked} asked, {live.status_unanswered} unanswered; p50 "
        f"{_ms(live.status_p50_s)}, p99 {_ms(p99)}, max {_ms(live.status_max_s)} "
        f"(bound {options.status_p99_s * 1000:.0f} ms)"
        + (f"; first unanswered {live.unanswered_why[0]}" if live.unanswered_why else "")
    )
    return [
        Check("watchdog: no gap between pings beyond WatchdogSec", gap_ok, gap_detail),
        Check("status: answers within the p99 bound, every time", p99_ok, p99_detail),
    ]


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def memory_trends(options: SoakOptions, runs: list[DaemonRun], monitor: Monitor) -> Memory:
    """Per run, the trends of RSS (and GPU memory) after the warm-up."""
    o = options
    rss, gpu = [], []
    for run in runs:
        settled_from = run.ready_at_s + o.warmup_s
        rss.append(trend(run.index, _of_run(monitor.rss, run.index), settled_from))
        gpu_samples = _of_run(monitor.gpu, run.index)
        if gpu_samples:
            gpu.append(trend(run.index, gpu_samples, settled_from))
    peaks = dict(sorted(monitor.peak_rss_by_run.items()))
    return Memory(tuple(rss), peaks, tuple(gpu), o.warmup_s, o.max_memory_growth)


def _of_run(samples: list[Sample], run: int) -> list[Sample]:
    return [s for s in samples if s.run == run]
