"""The keepup result: a verdict and its numbers for people, the same as JSON for programs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..soak.reconcile import Check
from .sampling import Sample, engine_shares
from .verdict import Cadence, LagVerdict, SummaryTiming

MIB = 2**20
KEEPS_UP, FALLS_BEHIND = "KEEPS UP", "DOES NOT KEEP UP"
BUSY_NOTE = 0.9  # an engine busier than this during the feed is worth a note


@dataclass(frozen=True)
class Lines:
    planned: int
    sent: int  # written to `streamd send`
    send_exit: int | None  # 0: every line acknowledged (spooled by the daemon)
    max_late_s: float  # the feed's worst lateness against its schedule
    received: int  # the daemon's counters at the end, before SIGTERM
    ingested: int
    rejected: int
    dropped: int
    drain_s: float | None  # after the feed, until ingested == sent (None: never)


@dataclass(frozen=True)
class Daemon:
    model: str
    device: str
    ready_after_s: float
    exit_code: int
    rss_max_bytes: int | None  # the largest VmRSS sampled
    rss_peak_bytes: int | None  # VmHWM at the end (or the largest sample): spikes between samples


@dataclass(frozen=True)
class KeepupResult:
    settings: Mapping[str, Any]
    feed_s: float  # from the first line due to the last written
    lines: Lines
    lag: LagVerdict
    cadence: Cadence
    summaries: tuple[SummaryTiming, ...]  # every record of the JSONL, shutdown included
    final_status: Mapping[str, Any]  # the last status before SIGTERM
    daemon: Daemon
    samples: tuple[Sample, ...]
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def feed_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.at_s <= self.feed_s]

    def as_json(self) -> dict[str, Any]:
        summaries = self.final_status.get("summaries", {})
        feed = self.feed_samples
        rates = [s.tokens_per_s for s in feed]
        return {
            "ok": self.ok,
            "verdict": KEEPS_UP if self.ok else FALLS_BEHIND,
            "settings": dict(self.settings),
            "feed_s": round(self.feed_s, 3),
            "lines": vars(self.lines),
            "lag": self.lag.as_json()
            | {
                "queue_depth_max": max((s.queue_depth for s in feed), default=0),
                "daemon_said_behind_samples": sum(1 for s in feed if not s.keeps_up),
            },
            "engine_share": engine_shares(feed),
            "tokens_per_s": {
                "mean": round(sum(rates) / len(rates), 3) if rates else None,
                "max": max(rates, default=None),
                "ingested": self.final_status.get("tokens", {}).get("ingested"),
            },
            "summaries": self.cadence.as_json()
            | {
                "emitted": summaries.get("emitted"),
                "jsonl_records": len(self.summaries),
                "by_trigger": dict(Counter(t.trigger for t in self.summaries)),
                "held_back": summaries.get("held_back"),
                "time_limited": summaries.get("time_limited"),
                "records": [t.as_json() for t in self.summaries],
            },
            "daemon": vars(self.daemon),
            "checks": [vars(check) for check in self.checks],
            "samples": [s.as_json() for s in self.samples],
        }

    def render(self) -> str:
        doc, o = self.as_json(), self.settings
        lines, lag, summaries = doc["lines"], doc["lag"], doc["summaries"]
        drain = lines["drain_s"]
        drained = "never drained" if drain is None else f"drained {drain:.1f} s after the feed"
        rss = self.daemon.rss_max_bytes, self.daemon.rss_peak_bytes
        trend = lag["first_third_max_s"], lag["last_third_max_s"]
        out = [
            f"streamd keepup: {self.daemon.model} on {self.daemon.device}, {o['rate']:g} lines/s "
            f"for {o['duration_s']:g} s, a summary every {o['summary_every_seconds']:g} s, "
            f"max_capacity {o['max_capacity']}",
            f"daemon ready after {self.daemon.ready_after_s:.1f} s; feed {self.feed_s:.1f} s",
            f"lines: planned {lines['planned']}, sent {lines['sent']}, received "
            f"{lines['received']}, ingested {lines['ingested']} ({drained}); rejected "
            f"{lines['rejected']}, dropped {lines['dropped']}; feed late by at most "
            f"{lines['max_late_s']:.2f} s",
            f"lag (oldest unread): max {lag['max_s']:.1f} s, p95 {lag['p95_s']:.1f} s; worst in "
            f"first third {_s(trend[0])}, last third {_s(trend[1])}; queue max "
            f"{lag['queue_depth_max']}; daemon said behind in {lag['daemon_said_behind_samples']} "
            f"of {lag['samples']} samples",
            f"lag trend: {_rate(lag['growth_s_per_min'])} (least squares over the feed)",
            f"engine during the feed: {_share(doc['engine_share'])}; "
            f"{_num(doc['tokens_per_s']['mean'])} tokens/s mean (1-minute rate), "
            f"{doc['tokens_per_s']['ingested']} tokens ingested",
            f"summaries: {summaries['periodic']} periodic during the feed, "
            f"{summaries['jsonl_records']} in the JSONL {summaries['by_trigger']}; held back "
            f"{summaries['held_back']}, time-limited {summaries['time_limited']}; latency max "
            f"{_s(summaries['latency_max_s'])}",
            f"  intervals between outputs (s): {_list(summaries['intervals_s'])}",
            f"  pauses, end to next start (s): {_list(summaries['gaps_s'])}",
            f"daemon RSS: max sampled {_mib(rss[0])}, peak (VmHWM) {_mib(rss[1])}; "
            f"exit code on SIGTERM {self.daemon.exit_code}",
            "",
            "checks:",
            *(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {c.detail}" for c in self.checks),
            *self._notes(doc),
            "",
            KEEPS_UP if self.ok else FALLS_BEHIND,
        ]
        return "\n".join(out)

    def _notes(self, doc: dict[str, Any]) -> list[str]:
        """What the checks pass over in a short run: a lag still climbing, an engine
        with no time to spare."""
        growth, busy = doc["lag"]["growth_s_per_min"], doc["engine_share"]["busy"]
        notes = []
        if growth is not None and growth * self.feed_s / 60 > self.lag.slack_s / 2:
            notes.append(
                f"note: the lag climbed {growth:+.1f} s a minute over the feed; at that rate "
                f"{self.lag.bound_s:g} s is reached in {60 * self.lag.bound_s / growth:.0f} s"
            )
        if busy is not None and busy >= BUSY_NOTE:
            notes.append(
                f"note: the engine was busy {100 * busy:.0f}% of the feed: little or no time "
                "to spare, so the queue grows at any higher rate or on a busier machine"
            )
        return ["", *notes] if notes else []


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} s a minute"


def _share(shares: Mapping[str, float | None]) -> str:
    busy = shares["busy"]
    if busy is None:
        return "busy n/a"
    return (
        f"busy {100 * busy:.0f}% (ingesting {100 * (shares['ingesting'] or 0):.0f}%, "
        f"summarizing {100 * (shares['summarizing'] or 0):.0f}%)"
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _list(values: list[float]) -> str:
    return " ".join(f"{v:.1f}" for v in values) or "none"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f} MiB"
