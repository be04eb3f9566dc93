"""`streamd demo`: the main job in one command, on the embedded default model.

Real server logs (bundled from Debian's fail2ban test data, see
daemon/data/SOURCES.md) stream through one session at a steady offered rate;
each running summary and a stats line are printed as they come, and a table
closes the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources

from ..engine.api import Summary
from ..engine.grounding import top_patterns_text
from ..engine.session import Session

Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    lines: int = 150  # how many log lines to stream
    rate: float = 10.0  # offered lines per second
    summary_every_tokens: int = 2048


@dataclass
class DemoTotals:
    lines: int = 0
    ingest_s: float = 0.0
    summaries: list[Summary] = field(default_factory=list)


def sample_lines() -> list[str]:
    text = resources.files("streamd.daemon.data").joinpath("fail2ban-sample.log").read_text()
    return [line for line in text.splitlines() if line.strip()]


def paced_batches(lines: list[str], count: int, rate: float) -> Iterator[list[str]]:
    """Batches of the lines offered in each second; cycles the sample if `count` is larger."""
    per_second = max(1, round(rate))
    picked = [lines[i % len(lines)] for i in range(count)]
    for start in range(0, count, per_second):
        yield picked[start : start + per_second]


def _stats_line(session: Session, totals: DemoTotals) -> str:
    s = session.stats()
    rate = s.tokens_ingested / totals.ingest_s if totals.ingest_s else 0.0
    return (
        f"[stats] lines {totals.lines} | tokens {s.tokens_ingested} ({rate:,.0f} tok/s prefill) "
        f"| cache {s.used}/{s.max_capacity} slots, {s.cache_bytes / 2**20:.1f} MiB "
        f"| evicted {s.tokens_evicted} | summaries {s.summaries}"
    )


def _print_summary(echo: Echo, summary: Summary) -> None:
    echo(
        f"\n=== summary after {summary.stream_tokens} stream tokens (window: positions "
        f"{summary.window_first}..{summary.window_last}) "
        f"(TTFT {summary.ttft_s * 1000:.0f} ms, {summary.tpot_s * 1000:.1f} ms/token) ==="
    )
    echo(summary.text or "(empty)")
    if summary.facts is not None:
        echo(top_patterns_text(summary.facts.as_dict()).rstrip("\n"))
    echo("")


def run_demo(session: Session, options: DemoOptions, echo: Echo) -> DemoTotals:
    totals = DemoTotals()
    since_summary = 0
    for batch in paced_batches(sample_lines(), options.lines, options.rate):
        tick = time.perf_counter()
        since_summary += session.ingest("\n".join(batch)).tokens
        totals.ingest_s += time.perf_counter() - tick
        totals.lines += len(batch)
        echo(_stats_line(session, totals))
        if since_summary >= options.summary_every_tokens:
            totals.summaries.append(session.summarize())
            _print_summary(echo, totals.summaries[-1])
            since_summary = 0
        time.sleep(max(0.0, 1.0 - (time.perf_counter() - tick)))
    if since_summary:  # a summary of nothing new would repeat the last one
        totals.summaries.append(session.summarize())
        _print_summary(echo, totals.summaries[-1])
    return totals


def render_totals(session: Session, totals: DemoTotals) -> str:
    s = session.stats()
    ttft = sorted(x.ttft_s for x in totals.summaries)
    tpot = sorted(x.tpot_s for x in totals.summaries)
    rows = [
        ("model", s.model),
        ("device / dtype", f"{s.device} / {s.dtype}"),
        ("lines streamed", str(totals.lines)),
        ("stream tokens", str(s.tokens_ingested)),
        ("tokens evicted", str(s.tokens_evicted)),
        ("cache (pinned + window)", f"{s.pinned} + {s.window} = {s.max_capacity} slots"),
        ("cache memory", f"{s.cache_bytes / 2**20:.1f} MiB, fixed"),
        ("prefill rate", f"{s.tokens_ingested / max(totals.ingest_s, 1e-9):,.0f} tok/s"),
        ("summaries", str(len(totals.summaries))),
        ("summary TTFT median", f"{ttft[len(ttft) // 2] * 1000:.0f} ms"),
        ("summary TPOT median", f"{tpot[len(tpot) // 2] * 1000:.1f} ms/token"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
