"""The arithmetic of the verdict: numbers in, checks out. No I/O, no clocks.

Lag is bounded when the oldest unread message was never older than the bound, and
did not trend upward: the worst lag of the feed's last third is at most the first
third's plus a slack (a queue that grows a little every minute fails this long before
it hits any bound). Summaries keep their period when each one starts `every` seconds
(+- a tolerance) after the previous one ended: the daemon's period starts again when a
summary ends, so the interval between two outputs is that plus the summary's own time.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..soak.reconcile import Check

MIN_TREND_SAMPLES = 3  # fewer lag samples than this: no trend can be judged
PERIODIC = "seconds"  # the trigger of the summaries whose period is judged
FEED_LATE_BOUND_S = 5.0  # a line written later than this after its schedule: the feed slipped


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank q-th percentile (0 < q <= 100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- lag ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LagVerdict:
    samples: int
    max_s: float
    p95_s: float
    first_third_max_s: float | None  # None: too few samples for a trend
    last_third_max_s: float | None
    bound_s: float
    slack_s: float
    growth_s_per_min: float | None = None  # least-squares slope; None below 3 samples

    @property
    def bounded(self) -> bool:
        return self.samples > 0 and self.max_s <= self.bound_s

    @property
    def flat(self) -> bool:
        first, last = self.first_third_max_s, self.last_third_max_s
        return first is not None and last is not None and last <= first + self.slack_s

    def checks(self) -> list[Check]:
        if self.first_third_max_s is None or self.last_third_max_s is None:
            trend = f"only {self.samples} samples: lengthen --duration or lower --sample-every"
        else:
            trend = (
                f"worst in the last third {self.last_third_max_s:.1f} s, first third "
                f"{self.first_third_max_s:.1f} s + slack {self.slack_s:g} s"
            )
        return [
            Check(
                f"lag: the oldest unread message stayed under {self.bound_s:g} s",
                self.bounded,
                f"max {self.max_s:.1f} s, p95 {self.p95_s:.1f} s over {self.samples} samples",
            ),
            Check("lag: no upward trend", self.flat, trend),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "max_s": self.max_s,
            "p95_s": self.p95_s,
            "first_third_max_s": self.first_third_max_s,
            "last_third_max_s": self.last_third_max_s,
            "bound_s": self.bound_s,
            "slack_s": self.slack_s,
            "growth_s_per_min": self.growth_s_per_min,
            "bounded": self.bounded,
            "flat": self.flat,
        }


def judge_lag(series: Sequence[tuple[float, float]], bound_s: float, slack_s: float) -> LagVerdict:
    """`series`: (seconds into the feed, oldest unread age in seconds), in time order."""
    lags = [lag for _, lag in series]
    first = last = None
    if len(series) >= MIN_TREND_SAMPLES:
        start, end = series[0][0], series[-1][0]
        third = (end - start) / 3
        first = max(lag for at, lag in series if at <= start + third)
        last = max(lag for at, lag in series if at >= end - third)
    return LagVerdict(
        samples=len(series),
        max_s=max(lags, default=0.0),
        p95_s=percentile(lags, 95),
        first_third_max_s=first,
        last_third_max_s=last,
        bound_s=bound_s,
        slack_s=slack_s,
        growth_s_per_min=slope_per_min(series),
    )


def slope_per_min(series: Sequence[tuple[float, float]]) -> float | None:
    """The least-squares slope of (seconds, value), per minute: a lag that climbs a few
    seconds a minute in a short run is a bound broken in a long one (for people: summaries
    make the lag a sawtooth, so it is no check)."""
    if len(series) < MIN_TREND_SAMPLES:
        return None
    n = len(series)
    mean_t = sum(t for t, _ in series) / n
    mean_v = sum(v for _, v in series) / n
    spread = sum((t - mean_t) ** 2 for t, _ in series)
    if spread == 0:
        return None
    slope = sum((t - mean_t) * (v - mean_v) for t, v in series) / spread
    return round(60 * slope, 3)


# --- summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryTiming:
    seq: int
    trigger: str  # seconds, tokens, request or shutdown
    start_s: float  # seconds into the feed (its end less its latency)
    end_s: float  # when it was stamped, seconds into the feed
    latency_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "trigger": self.trigger,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "latency_s": round(self.latency_s, 3),
        }


def timings_of(
    records: Iterable[dict[str, Any]], feed_started_epoch_s: float
) -> list[SummaryTiming]:
    """The JSONL's summary records (their `time` is ISO 8601 UTC) on the feed's clock."""
    timings = []
    for record in records:
        end = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
        latency = float(record.get("latency_s") or 0.0)
        end_s = end - feed_started_epoch_s
        seq, trigger = int(record["seq"]), str(record["trigger"])
        timings.append(SummaryTiming(seq, trigger, end_s - latency, end_s, latency))
    return timings


@dataclass(frozen=True)
class Cadence:
    every_s: float
    tolerance_s: float
    feed_s: float
    periodic: tuple[SummaryTiming, ...]  # seconds-triggered, started while the feed ran

    @property
    def intervals_s(self) -> list[float]:
        """From one periodic summary's output to the next's."""
        ends = [t.end_s for t in self.periodic]
        return [round(b - a, 3) for a, b in itertools.pairwise(ends)]

    @property
    def gaps_s(self) -> list[float]:
        """From one periodic summary's end to the next one's start: the daemon's period."""
        pairs = itertools.pairwise(self.periodic)
        return [round(b.start_s - a.end_s, 3) for a, b in pairs]

    def checks(self) -> list[Check]:
        every, tol, n = self.every_s, self.tolerance_s, len(self.periodic)
        low, high = every - tol, every + tol
        off = [gap for gap in self.gaps_s if not low <= gap <= high]
        gaps = ", ".join(f"{gap:.1f}" for gap in self.gaps_s) or "none: fewer than two"
        return [
            Check(
                f"summaries: no {every:g} s (+{tol:g}) of the feed went by without one starting",
                *self._coverage(),
            ),
            Check(
                f"summaries: each starts {every:g} s +- {tol:g} after the previous one ended",
                not off,
                f"{n} periodic; pauses (s) {gaps}",
            ),
        ]

    def _coverage(self) -> tuple[bool, str]:
        """No period of the feed ran out without a periodic summary starting."""
        due = self.every_s + self.tolerance_s
        if not self.periodic:
            ok = self.feed_s <= due
            return ok, f"none in {self.feed_s:.0f} s of feed"
        first, last = self.periodic[0].start_s, self.periodic[-1].end_s
        ok = first <= due and self.feed_s - last <= due
        return ok, (
            f"{len(self.periodic)} periodic; the first started {first:.1f} s into the feed, "
            f"the last ended {last:.1f} s into it (feed {self.feed_s:.0f} s)"
        )

    def as_json(self) -> dict[str, Any]:
        latencies = [t.latency_s for t in self.periodic]
        return {
            "every_s": self.every_s,
            "tolerance_s": self.tolerance_s,
            "periodic": len(self.periodic),
            "intervals_s": self.intervals_s,
            "gaps_s": self.gaps_s,
            "latency_max_s": round(max(latencies), 3) if latencies else None,
            "latency_mean_s": round(sum(latencies) / len(latencies), 3) if latencies else None,
        }


def judge_cadence(
    timings: Sequence[SummaryTiming], every_s: float, tolerance_s: float, feed_s: float
) -> Cadence:
    """The periodic (seconds-triggered) summaries that started while the feed ran."""
    periodic = tuple(t for t in timings if t.trigger == PERIODIC and t.start_s <= feed_s)
    return Cadence(every_s, tolerance_s, feed_s, periodic)


# --- lines ----------------------------------------------------------------------------


def line_checks(
    planned: int,
    sent: int,
    send_exit: int | None,
    received: int,
    ingested: int,
    max_late_s: float,
) -> list[Check]:
    """The feed went out as planned and on time, and the daemon took in all of it."""
    return [
        Check("feed: every planned line was sent", sent == planned, f"{sent} of {planned}"),
        Check(
            f"feed: every line went out within {FEED_LATE_BOUND_S:g} s of its schedule",
            max_late_s <= FEED_LATE_BOUND_S,
            f"latest by {max_late_s:.2f} s",
        ),
        Check(
            "feed: `streamd send` had every line acknowledged (exit 0)",
            send_exit == 0,
            "still running" if send_exit is None else f"exit code {send_exit}",
        ),
        Check(
            "daemon: every line sent was received and ingested",
            received == ingested == sent,
            f"sent {sent}, received {received}, ingested {ingested}",
        ),
    ]
