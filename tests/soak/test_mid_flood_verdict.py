"""The soak's verdict when daemon runs end mid-flood: a SIGKILLed run's counters die with it,
so delivery is judged on the spool's lifetime totals; and the liveness arithmetic (watchdog
gaps, `status` latency) that the soak judges each run on."""

from __future__ import annotations

import threading

import pytest

from streamd.daemon.tools.soak.daemon_runs import DaemonRun, must_spool
from streamd.daemon.tools.soak.liveness import (
    LiveWindow,
    StatusProbe,
    liveness,
    max_gap,
    probe_judged_by,
    quantile,
)
from streamd.daemon.tools.soak.options import SoakOptions
from streamd.daemon.tools.soak.reconcile import Counts, Delivery, reconcile_source
from streamd.daemon.tools.soak.verdict import liveness_checks, source_reports, spool_check
from streamd.daemon.tools.testing import wait_until

SENT = {"good": 90, "bad_utf8": 4, "nul": 3, "broken_json": 2, "blob": 1}


def failed(checks: list) -> list[str]:  # type: ignore[type-arg]
    return [check.name for check in checks if not check.ok]


def run(index: int, counts: dict[str, Counts] | None) -> DaemonRun:
    return DaemonRun(index, 0.0, 0, 0, final=counts)


def test_without_every_runs_counts_delivery_rests_on_the_spool_totals() -> None:
    sent = {"zmq-acked": {"good": 95, "broken_json": 5}, "mqtt": dict(SENT)}
    last = {
        "zmq-acked": Counts(received=40, ingested=38, rejected={"bad_json_envelope": 2}),
        "mqtt": Counts(received=30, ingested=30),
    }
    runs = [run(0, None), run(1, last)]  # the first was SIGKILLed
    # Acked: every message spooled once (rejected ones too); MQTT: the decodable ones, a
    # duplicate allowed.
    reports = source_reports(runs, sent, True, {"zmq-acked": 100, "mqtt": 98})
    assert [failed(list(r.checks)) for r in reports] == [[], []]
    names = [c.name for c in reports[0].checks]
    assert "zmq-acked: spooled exactly once" in names
    assert "zmq-acked: received = sent" not in names  # the first run's received died with it
    # A line spooled twice, or one missing, fails the exact source; one missing fails MQTT.
    for zmq_spooled in (99, 101):
        twice = source_reports(runs, sent, True, {"zmq-acked": zmq_spooled, "mqtt": 98})
        assert failed(list(twice[0].checks)) == ["zmq-acked: spooled exactly once"]
    lost = source_reports(runs, sent, True, {"zmq-acked": 100, "mqtt": 96})
    assert failed(list(lost[1].checks)) == ["mqtt: spooled at least once"]
    assert must_spool(sent) == {"zmq-acked": 100, "mqtt": 97}


def test_a_run_that_does_not_balance_fails_even_among_unknown_ones() -> None:
    counts = Counts(received=10, ingested=8, replayed=1)  # 11 in, 8 accounted for
    report = reconcile_source(
        "zmq-acked", Delivery.EXACT, {"good": 10}, counts, spooled=(10, 10), complete=False
    )
    assert failed(list(report.checks)) == ["zmq-acked: every message received is accounted for"]


def test_the_spool_must_have_nothing_left_after_the_last_stop() -> None:
    assert spool_check({"next_seq": 101, "trimmed_upto": 100}).ok
    assert not spool_check({"next_seq": 101, "trimmed_upto": 90}).ok
    assert not spool_check({}).ok


def test_watchdog_gaps_count_from_ready_and_only_inside_each_run() -> None:
    pings = [1.0, 2.0, 3.0, 10.0, 11.0, 14.5]
    assert max_gap(pings, 0.5, 3.5) == 1.0
    assert max_gap(pings, 9.0, 15.0) == 3.5  # 11.0 -> 14.5
    assert max_gap(pings, 4.0, 9.0) is None
    windows = [LiveWindow(0.5, 3.5), LiveWindow(9.0, 15.0), LiveWindow(20.0)]  # last: open
    live = liveness(pings, windows, [0.01, 0.02, None, 0.5])
    assert live.gaps_by_run == (1.0, 3.5) and live.max_ping_gap_s == 3.5
    assert (live.status_asked, live.status_unanswered, live.status_max_s) == (4, 1, 0.5)
    checks = liveness_checks(SoakOptions(watchdog_s=4.0, status_p99_s=1.0), live)
    # The gap is within 4 s, but one `status` went unanswered.
    assert failed(checks) == ["status: answers within the p99 bound, every time"]
    strict = liveness_checks(SoakOptions(watchdog_s=2.0), liveness(pings, windows, [0.01]))
    assert failed(strict) == ["watchdog: no gap between pings beyond WatchdogSec"]


def test_the_p99_is_a_measured_answer_not_an_interpolation() -> None:
    latencies = [0.001 * i for i in range(1, 101)]
    assert quantile(latencies, 0.99) == pytest.approx(0.099)
    assert quantile(latencies, 0.5) == pytest.approx(0.050)
    assert quantile([], 0.99) is None


def test_an_answer_counts_only_in_the_run_it_was_asked_in() -> None:
    """A request to a run that is ending can come back after the next run is live: it is
    that earlier run's, and not counted (the soak signals only once live(False) returned)."""
    asked, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def status() -> tuple[dict[str, object] | None, str]:
        calls.append(1)
        if len(calls) == 1:  # the first request hangs until the next run is live
            asked.set()
            release.wait(30)
            return None, "DaemonNotAnswering: took the connection but did not answer"
        return {"state": "ready"}, ""

    probe = StatusProbe(status)
    probe.start()
    try:
        probe.live(True)
        assert asked.wait(30)
        probe.live(False)  # the run ends while its request hangs...
        probe.live(True)  # ...and the next one is live when it comes back
        release.set()
        wait_until(lambda: len(probe.latencies) >= 2, "two answers of the second run")
    finally:
        probe.stop()
    assert None not in probe.latencies and probe.unanswered == []


@pytest.mark.parametrize(("bound_s", "waits_s"), [(1.0, 5.0), (10.0, 20.0)])
def test_the_probe_waits_as_long_as_the_bound_it_is_judged_by(
    bound_s: float, waits_s: float
) -> None:
    """A slow answer within a loose --status-p99 (CI's 10 s) counts as an answer for the p99
    to judge, not as a lost request at the client's usual 5 s."""
    timeouts: list[float] = []

    def status_or_error(timeout_s: float) -> tuple[dict[str, object] | None, str]:
        timeouts.append(timeout_s)
        return {"state": "ready"}, ""

    probe = probe_judged_by(status_or_error, bound_s)
    probe.start()
    try:
        probe.live(True)
        wait_until(lambda: len(probe.latencies) >= 1, "one answer")
    finally:
        probe.stop()
    assert timeouts and set(timeouts) == {waits_s}
