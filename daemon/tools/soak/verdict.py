"""From the daemon runs' counters and the monitor's samples to the SoakResult's parts:
per-source reports, memory trends, fault checks."""

from __future__ import annotations

from .daemon_runs import SOURCES, ZMQ_SOURCE, DaemonRun, never_received
from .monitor import Monitor, Sample
from .options import SoakOptions
from .reconcile import Check, Delivery, SourceReport, reconcile_source, total, trend
from .report import Memory


def source_reports(
    runs: list[DaemonRun], sent: dict[str, dict[str, int]], repairs_reported: bool
) -> list[SourceReport]:
    """Per source: what was sent (by kind) against what all runs counted."""
    reports = []
    for source in SOURCES:
        counts = total(run.counted(source) for run in runs)
        delivery = Delivery.EXACT if source == ZMQ_SOURCE else Delivery.AT_LEAST_ONCE
        never = never_received(source, sent[source])
        reports.append(
            reconcile_source(source, delivery, sent[source], counts, never, repairs_reported)
        )
    return reports


def fault_checks(
    options: SoakOptions, broker_restarts: int, daemon_kills: int, exit_code: int
) -> list[Check]:
    o = options
    planned = (o.broker_restarts, int(o.kill_daemon_once))
    done = (broker_restarts, daemon_kills)
    detail = f"broker restarts {done[0]} of {planned[0]}, daemon SIGKILLs {done[1]} of {planned[1]}"
    return [
        Check("faults: every planned fault was injected", done == planned, detail),
        Check("daemon: SIGTERM at the end exits 0", exit_code == 0, f"exit code {exit_code}"),
    ]


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
