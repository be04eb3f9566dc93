"""The soak's verdict: counts that add up pass, and each way of not adding up fails."""

from __future__ import annotations

from dataclasses import replace

from streamd.daemon.tools.soak.monitor import Sample
from streamd.daemon.tools.soak.reconcile import (
    Counts,
    Delivery,
    SourceReport,
    flat_check,
    reconcile_source,
    summaries_checks,
    total,
    trend,
)

SENT = {"good": 90, "bad_utf8": 4, "nul": 3, "broken_json": 2, "blob": 1}
# What a correct daemon counts for SENT over ZeroMQ: the blob never arrives (libzmq).
ZMQ_COUNTS = Counts(
    received=99,
    ingested=97,
    rejected={"bad_json_envelope": 2},
    repaired={"replaced": 16, "stripped": 9},
)


def failed(report: SourceReport) -> list[str]:
    return [check.name for check in report.checks if not check.ok]


def zmq(counts: Counts) -> SourceReport:
    return reconcile_source("zmq-pull", Delivery.EXACT, SENT, counts, {"blob": 1})


def test_counts_that_add_up_pass() -> None:
    report = zmq(ZMQ_COUNTS)
    assert failed(report) == []
    assert report.expected_received == 99 and report.duplicates == 0


def test_a_lost_message_fails_delivery_and_the_acceptable_line_count() -> None:
    report = zmq(replace(ZMQ_COUNTS, received=98, ingested=96))
    assert failed(report) == [
        "zmq-pull: received = sent",
        "zmq-pull: every acceptable line was ingested or dropped with a reason",
    ]


def test_a_message_counted_nowhere_fails_the_balance() -> None:
    report = zmq(replace(ZMQ_COUNTS, ingested=96))
    assert "zmq-pull: every message received is accounted for" in failed(report)


def test_a_broken_envelope_ingested_instead_of_rejected_fails() -> None:
    report = zmq(replace(ZMQ_COUNTS, ingested=98, rejected={"bad_json_envelope": 1}))
    assert failed(report) == [
        "zmq-pull: rejected bad_json_envelope",
        "zmq-pull: every acceptable line was ingested or dropped with a reason",
    ]


def test_a_rejection_for_a_reason_nothing_was_sent_for_fails() -> None:
    counts = replace(ZMQ_COUNTS, ingested=96, rejected={"bad_json_envelope": 2, "empty": 1})
    assert failed(zmq(counts)) == [
        "zmq-pull: rejected empty",
        "zmq-pull: every acceptable line was ingested or dropped with a reason",
    ]


def test_drops_with_a_reason_are_accounted_for_and_leftovers_in_the_queue_are_not() -> None:
    dropped = replace(ZMQ_COUNTS, ingested=95, dropped={"queue_full": 2})
    assert failed(zmq(dropped)) == []
    queued = replace(ZMQ_COUNTS, ingested=95, queued=2)
    assert failed(zmq(queued)) == [
        "zmq-pull: every acceptable line was ingested or dropped with a reason",
        "zmq-pull: nothing left queued",
    ]


def test_repairs_must_match_the_spoiled_lines_sent() -> None:
    report = zmq(replace(ZMQ_COUNTS, repaired={"replaced": 15, "stripped": 9}))
    assert failed(report) == ["zmq-pull: repaired replaced"]
    unchecked = reconcile_source(
        "zmq-pull", Delivery.EXACT, SENT, replace(ZMQ_COUNTS, repaired={}), {"blob": 1}, False
    )
    assert failed(unchecked) == []  # a daemon that does not report repairs


def test_at_least_once_allows_duplicates_but_not_losses() -> None:
    counts = Counts(
        received=102,  # the blob reaches the decoder over MQTT, and 2 came twice
        ingested=99,
        rejected={"bad_json_envelope": 2, "too_large": 1},
        repaired={"replaced": 16, "stripped": 9},
    )
    report = reconcile_source("mqtt", Delivery.AT_LEAST_ONCE, SENT, counts)
    assert failed(report) == [] and report.duplicates == 2
    short = replace(counts, received=99, ingested=96)
    assert "mqtt: received >= sent (QoS 1)" in failed(
        reconcile_source("mqtt", Delivery.AT_LEAST_ONCE, SENT, short)
    )


def test_runs_add_up_from_status_rows_whatever_a_run_started_from() -> None:
    first = Counts.from_status(
        {"received": 10, "ingested": 9, "rejected_by_reason": {"too_large": 1}, "queued": 0}
    )
    # A resumed daemon might carry counters over: only what it added counts.
    carried = Counts.from_status({"received": 10, "ingested": 9})
    later = Counts.from_status(
        {"received": 15, "ingested": 11, "dropped_by_reason": {"queue_full": 2}, "queued": 1}
    )
    summed = total([first, later - carried])
    assert (summed.received, summed.ingested, summed.queued) == (15, 11, 1)
    assert summed.dropped == {"queue_full": 2} and summed.rejected == {"too_large": 1}
    assert summed.balanced


def test_summaries_must_all_be_in_a_jsonl_that_never_shrank() -> None:
    assert all(check.ok for check in summaries_checks(11, 0, 10, 1, []))
    assert [c.ok for c in summaries_checks(10, 0, 10, 1, [])] == [False, True, True]
    assert [c.ok for c in summaries_checks(11, 1, 10, 1, [])] == [True, False, True]
    shrank = summaries_checks(11, 0, 10, 1, ["summaries.jsonl went from 900 to 0 bytes"])
    assert not shrank[1].ok and "900 to 0" in shrank[1].detail
    repeated = summaries_checks(11, 0, 10, 1, [], repeated_seq=2)
    assert [c.ok for c in repeated] == [True, True, False]
    assert "2 seq numbers written twice" in repeated[2].detail


def samples(values: list[int], run: int = 0, start_s: float = 0.0) -> list[Sample]:
    return [Sample(start_s + 0.5 * i, run, value) for i, value in enumerate(values)]


def test_memory_is_flat_when_the_last_third_peaks_no_higher_than_allowed() -> None:
    warming = [100, 300]  # loading the model: before the warm-up ends, not judged
    # A passing spike in the middle third (a blob being read) is not growth.
    flat = trend(0, samples([*warming, *[500] * 10, 520, *[500] * 10]), settled_from_s=1.0)
    assert (flat.samples, flat.first_peak, flat.last_peak) == (21, 500, 500)
    assert flat_check("daemon RSS", [flat], bound=1.1).ok
    # 500, 510, ... 790 at 1.0 .. 15.5 s: the first third peaks at 590, the last at 790.
    growing = trend(1, samples([*warming, *range(500, 800, 10)], run=1), settled_from_s=1.0)
    assert (growing.first_peak, growing.last_peak) == (590, 790)
    check = flat_check("daemon RSS", [flat, growing], bound=1.1)
    assert not check.ok and "run 2 x1.339" in check.detail


def test_a_run_too_short_to_judge_is_said_so() -> None:
    short = trend(0, samples([500, 500, 500]), settled_from_s=0.0)
    assert short.ratio is None
    check = flat_check("daemon RSS", [short], bound=1.2)
    assert not check.ok and "--duration" in check.detail


def test_a_replay_after_a_sigkill_and_what_a_sigterm_left_in_the_spool_still_reconcile() -> None:
    # Run 1: 100 received and ingested, 20 of them after the last snapshot; SIGKILL. Run 2:
    # the spool replays those 20 (ingested again); 25 more arrive, 20 ingested and 5 left in
    # the spool at the SIGTERM (deferred).
    counts = Counts(received=125, ingested=140, replayed=20, deferred=5)
    assert counts.balanced  # 125 + 20 = 140 + 5
    report = reconcile_source("zmq-pull", Delivery.EXACT, {"good": 125}, counts)
    reached = next(c for c in report.checks if "acceptable" in c.name)
    assert reached.ok, reached.detail
    short = Counts(received=125, ingested=130, replayed=20, deferred=5)  # 10 lost
    assert not short.balanced
    assert not reconcile_source("zmq-pull", Delivery.EXACT, {"good": 125}, short).ok
