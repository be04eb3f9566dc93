"""The arithmetic of the soak's verdict: counts in, checks out. No I/O, no clocks.

Per source, summed over the daemon's runs: the counts balance, received matches sent,
rejections and repairs match what was sent spoiled, nothing is left queued. Memory is
checked to stay flat in every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .monitor import Sample
from .payloads import REJECTED_AS, REPAIRS

MIN_SAMPLES = 6  # fewer samples after the warm-up than this: too short to judge a trend
SLICES = 6  # the peak memory is reported per this many equal time slices of a run


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


class Delivery(StrEnum):
    EXACT = "exact"
    AT_LEAST_ONCE = "at-least-once"


def _add(a: Mapping[str, int], b: Mapping[str, int], sign: int = 1) -> dict[str, int]:
    keys = dict.fromkeys([*a, *b])
    summed = {key: a.get(key, 0) + sign * b.get(key, 0) for key in keys}
    return {key: value for key, value in summed.items() if value}


@dataclass(frozen=True)
class Counts:
    """One source's counters, as in `streamd status --json` (status.source_counts), with
    the spool's: replayed at a start (taken in again from the spool) and deferred at a stop
    (left in the spool for the next start)."""

    received: int = 0
    ingested: int = 0
    queued: int = 0
    replayed: int = 0
    deferred: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)  # by reason
    rejected: Mapping[str, int] = field(default_factory=dict)  # by reason
    repaired: Mapping[str, int] = field(default_factory=dict)  # by kind of repair

    @classmethod
    def from_status(
        cls, row: Mapping[str, Any] | None, spool: Mapping[str, Any] | None = None, source: str = ""
    ) -> Counts:
        """From `source`'s row of status's sources and, for the spool's counts, its spool
        section."""
        row, spool = row or {}, spool or {}
        return cls(
            received=int(row.get("received", 0)),
            ingested=int(row.get("ingested", 0)),
            queued=int(row.get("queued", 0)),
            replayed=int(spool.get("replayed_by_source", {}).get(source, 0)),
            deferred=int(spool.get("deferred_by_source", {}).get(source, 0)),
            dropped=dict(row.get("dropped_by_reason", {})),
            rejected=dict(row.get("rejected_by_reason", {})),
            repaired=dict(row.get("repaired_by_kind", {})),
        )

    def __add__(self, other: Counts) -> Counts:
        return self._combine(other, 1)

    def __sub__(self, other: Counts) -> Counts:
        return self._combine(other, -1)

    def _combine(self, other: Counts, sign: int) -> Counts:
        return Counts(
            received=self.received + sign * other.received,
            ingested=self.ingested + sign * other.ingested,
            queued=self.queued + sign * other.queued,
            replayed=self.replayed + sign * other.replayed,
            deferred=self.deferred + sign * other.deferred,
            dropped=_add(self.dropped, other.dropped, sign),
            rejected=_add(self.rejected, other.rejected, sign),
            repaired=_add(self.repaired, other.repaired, sign),
        )

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def balanced(self) -> bool:
        """received + replayed = ingested + dropped + rejected + queued + deferred."""
        accounted = self.ingested + self.dropped_total + self.rejected_total + self.queued
        return self.received + self.replayed == accounted + self.deferred

    def as_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "ingested": self.ingested,
            "dropped": self.dropped_total,
            "dropped_by_reason": dict(self.dropped),
            "rejected": self.rejected_total,
            "rejected_by_reason": dict(self.rejected),
            "queued": self.queued,
            "replayed": self.replayed,
            "deferred": self.deferred,
            "repaired_by_kind": dict(self.repaired),
        }


def total(counts: Iterable[Counts]) -> Counts:
    summed = Counts()
    for one in counts:
        summed += one
    return summed


# --- per source ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceReport:
    source: str
    delivery: Delivery
    sent: Mapping[str, int]  # by kind (payloads.Kind)
    never_received: Mapping[str, int]  # by kind: refused before the daemon could count them
    counts: Counts  # summed over the daemon's runs whose counts are known
    checks: tuple[Check, ...]
    spooled: int | None = None  # spooled over all runs (the spool's lifetime total)
    must_spool: int | None = None  # of what was sent: what the spool must hold
    complete: bool = True  # every run's counts are known (no SIGKILL)

    @property
    def sent_total(self) -> int:
        return sum(self.sent.values())

    @property
    def expected_received(self) -> int:
        return self.sent_total - sum(self.never_received.values())

    @property
    def duplicates(self) -> int:
        if self.delivery is Delivery.EXACT:
            return 0
        return max(0, self.counts.received - self.expected_received)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "delivery": str(self.delivery),
            "sent": self.sent_total,
            "sent_by_kind": dict(self.sent),
            "never_received_by_kind": dict(self.never_received),
            "expected_received": self.expected_received,
            "duplicates": self.duplicates,
            "spooled": self.spooled,
            "must_spool": self.must_spool,
            "counts_of_every_run": self.complete,
            **self.counts.as_json(),
            "reconciled": self.ok,
            "checks": [check.__dict__ for check in self.checks],
        }


def reconcile_source(
    source: str,
    delivery: Delivery,
    sent: Mapping[str, int],
    counts: Counts,
    never_received: Mapping[str, int] | None = None,
    repairs_reported: bool = True,
    spooled: tuple[int, int] | None = None,
    complete: bool = True,
) -> SourceReport:
    """The checks of one source; repairs_reported: the daemon's status counts repairs
    (repaired_by_kind), so they are checked too. spooled: (spooled, must spool), the spool's
    lifetime total and what it must hold of what was sent. Without every run's counts
    (complete False: a SIGKILLed run's died with it), the checks that need them all
    (received, by reason, reached the session) give way to the spool's total."""
    never = dict(never_received or {})
    total, must = spooled if spooled is not None else (None, None)
    report = SourceReport(source, delivery, dict(sent), never, counts, (), total, must, complete)
    checks = [_balance(report)]
    if complete:
        checks.append(_delivery(report))
        checks += _rejections(report)
        checks += _repairs(report) if repairs_reported else []
        checks.append(_reached_session(report))
    if spooled is not None:
        checks.append(_spooled(report))
    checks.append(
        Check(f"{source}: nothing left queued", counts.queued == 0, f"queued {counts.queued}")
    )
    return replace(report, checks=tuple(checks))


def _spooled(report: SourceReport) -> Check:
    """Over every run, SIGKILLed ones too: acked ZeroMQ spools each message sent exactly
    once (a resend is dropped as a duplicate), MQTT QoS 1 at least once."""
    got, must = report.spooled or 0, report.must_spool or 0
    detail = f"spooled {got} over all runs, {must} sent that must be"
    if report.delivery is Delivery.EXACT:
        return Check(f"{report.source}: spooled exactly once", got == must, detail)
    return Check(f"{report.source}: spooled at least once", got >= must, detail)


def _within(report: SourceReport, got: int, expected: int, per_duplicate: int = 1) -> bool:
    """Exact: equal. At least once: no fewer, and no more extra than each duplicate can
    bring (`per_duplicate` counts a message)."""
    if report.delivery is Delivery.EXACT:
        return got == expected
    return expected <= got <= expected + per_duplicate * report.duplicates


def _balance(report: SourceReport) -> Check:
    c = report.counts
    detail = (
        f"received {c.received} + replayed {c.replayed} = ingested {c.ingested} + dropped "
        f"{c.dropped_total} + rejected {c.rejected_total} + queued {c.queued} + deferred "
        f"{c.deferred}"
    )
    return Check(f"{report.source}: every message received is accounted for", c.balanced, detail)


# ZeroMQ PULL is exact: received = sent, less what libzmq refused before the daemon saw it.
# MQTT QoS 1 is at least once: received >= sent, and the difference is duplicates (a publish
# or a delivery resent across a broker restart).
def _delivery(report: SourceReport) -> Check:
    received, expected = report.counts.received, report.expected_received
    never = sum(report.never_received.values())
    less = f" less {never} refused before the daemon (ZMQ_MAXMSGSIZE)" if never else ""
    if report.delivery is Delivery.EXACT:
        detail = f"received {received}, sent {report.sent_total}{less}"
        return Check(f"{report.source}: received = sent", received == expected, detail)
    detail = f"received {received}, sent {report.sent_total}{less}: {report.duplicates} duplicates"
    return Check(f"{report.source}: received >= sent (QoS 1)", received >= expected, detail)


# Each reason as often as its kind was sent (payloads.REJECTED_AS), and no other reason.
def _rejections(report: SourceReport) -> list[Check]:
    expected: dict[str, int] = {}
    for kind, reason in REJECTED_AS.items():
        if kind not in report.never_received:
            expected[str(reason)] = expected.get(str(reason), 0) + report.sent.get(kind, 0)
    checks = []
    for reason in sorted({*expected, *report.counts.rejected}):
        got, wanted = report.counts.rejected.get(reason, 0), expected.get(reason, 0)
        detail = f"{got} rejected, {wanted} sent that must be"
        ok = _within(report, got, wanted)
        checks.append(Check(f"{report.source}: rejected {reason}", ok, detail))
    return checks


# Where the daemon reports repairs: each kind as often as the spoiled lines sent carry it
# (payloads.REPAIRS), and no other kind.
def _repairs(report: SourceReport) -> list[Check]:
    expected: dict[str, int] = {}
    for kind, repairs in REPAIRS.items():
        for repair, per_message in repairs.items():
            expected[repair] = expected.get(repair, 0) + per_message * report.sent.get(kind, 0)
    most = max(n for repairs in REPAIRS.values() for n in repairs.values())
    checks = []
    for repair in sorted({*expected, *report.counts.repaired}):
        got, wanted = report.counts.repaired.get(repair, 0), expected.get(repair, 0)
        ok = _within(report, got, wanted, most)  # a duplicate brings its repairs again
        detail = f"{got} counted, {wanted} in the lines sent"
        checks.append(Check(f"{report.source}: repaired {repair}", ok, detail))
    return checks


def _reached_session(report: SourceReport) -> Check:
    rejected_kinds = {str(kind) for kind in REJECTED_AS}
    accepted = sum(n for kind, n in report.sent.items() if kind not in rejected_kinds)
    c = report.counts
    # A replayed line may have been ingested before the stop as well (after the last
    # snapshot): reached counts it once, and a line replayed before its first ingest not
    # at all, so reached <= accepted <= reached + replayed.
    reached = c.ingested + c.dropped_total - c.replayed
    detail = (
        f"ingested {c.ingested} + dropped {c.dropped_total} - replayed {c.replayed}, "
        f"{accepted} good, bad_utf8 and nul lines sent"
    )
    name = f"{report.source}: every acceptable line was ingested or dropped with a reason"
    if not c.replayed:
        return Check(name, _within(report, reached, accepted), detail)
    ok = reached <= accepted + report.duplicates and accepted <= reached + c.replayed
    return Check(name, ok, detail)


# --- summaries ----------------------------------------------------------------------------


def summaries_checks(
    jsonl_lines: int,
    torn_lines: int,
    emitted: int,
    at_shutdown: int,
    shrank: Sequence[str],
    repeated_seq: int = 0,
) -> list[Check]:
    """The JSONL holds one line per summary the last daemon run emitted (status) plus the
    one written at shutdown (jsonl_lines: those the run wrote); every line is whole JSON,
    the file never got smaller, and no seq number comes twice (a restarted daemon numbers
    on from the file)."""
    written = Check(
        "summaries: every summary the last run emitted is in the JSONL",
        jsonl_lines == emitted + at_shutdown,
        f"{jsonl_lines} lines, {emitted} emitted + {at_shutdown} at shutdown",
    )
    whole = Check(
        "summaries: the JSONL was never truncated",
        torn_lines == 0 and not shrank,
        "; ".join([f"{torn_lines} lines are not whole JSON objects", *shrank])
        if torn_lines or shrank
        else "every line whole JSON, the file only grew",
    )
    unique = Check(
        "summaries: every seq number is written once",
        repeated_seq == 0,
        f"{repeated_seq} seq numbers written twice" if repeated_seq else "all distinct",
    )
    return [written, whole, unique]


# --- memory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trend:
    """One daemon run's memory after its warm-up: peaks of the first and last thirds."""

    run: int
    samples: int
    first_peak: int | None
    last_peak: int | None
    slice_peaks: tuple[int | None, ...]

    @property
    def ratio(self) -> float | None:
        if not self.first_peak or self.last_peak is None:
            return None
        return self.last_peak / self.first_peak

    def as_json(self) -> dict[str, Any]:
        ratio = self.ratio
        return {
            "run": self.run,
            "samples": self.samples,
            "first_third_peak_bytes": self.first_peak,
            "last_third_peak_bytes": self.last_peak,
            "ratio": None if ratio is None else round(ratio, 4),
            "slice_peaks_bytes": list(self.slice_peaks),
        }


def trend(run: int, samples: Sequence[Sample], settled_from_s: float) -> Trend:
    """The trend of `samples` (one run's, in time order) from `settled_from_s` on."""
    after = [s for s in samples if s.at_s >= settled_from_s]
    if len(after) < MIN_SAMPLES:
        return Trend(run, len(after), None, None, ())
    start, end = after[0].at_s, after[-1].at_s
    third = (end - start) / 3
    first = max(s.value for s in after if s.at_s <= start + third)
    last = max(s.value for s in after if s.at_s >= end - third)
    return Trend(run, len(after), first, last, _slice_peaks(after, start, end))


def _slice_peaks(samples: Sequence[Sample], start: float, end: float) -> tuple[int | None, ...]:
    width = (end - start) / SLICES or 1.0
    peaks: list[int | None] = [None] * SLICES
    for s in samples:
        index = min(SLICES - 1, int((s.at_s - start) / width))
        peaks[index] = max(s.value, peaks[index] or 0)
    return tuple(peaks)


def flat_check(what: str, trends: Sequence[Trend], bound: float) -> Check:
    """Flat: every judged run's last-third peak within `bound` x its first-third peak."""
    judged = [t for t in trends if t.ratio is not None]
    if not judged:
        why = "no run lasted long enough after its warm-up to judge: lengthen --duration"
        return Check(f"{what} is flat", False, why)
    worst = max(judged, key=lambda t: t.ratio or 0.0)
    ratios = ", ".join(f"run {t.run + 1} x{t.ratio:.3f}" for t in judged)
    ok = (worst.ratio or 0.0) <= bound
    return Check(f"{what} is flat", ok, f"last/first third peak: {ratios}; bound x{bound:g}")
