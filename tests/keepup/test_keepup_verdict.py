"""The keepup verdict: a bounded lag passes, a growing or too large one fails; summaries on
their period pass, a missing or late one fails; lines that do not add up fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.daemon import cli as cli_module
from streamd.daemon.tools.keepup.options import KeepupOptionError, KeepupOptions
from streamd.daemon.tools.keepup.sampling import Sample, engine_shares, sample_of
from streamd.daemon.tools.keepup.verdict import (
    SummaryTiming,
    judge_cadence,
    judge_lag,
    line_checks,
    percentile,
    slope_per_min,
    timings_of,
)

BOUND_S, SLACK_S = 30.0, 10.0


def sawtooth(seconds: int = 600, every_s: int = 2, period_s: int = 60) -> list[tuple[float, float]]:
    """A daemon that keeps up: lag climbs while each summary runs (up to 12 s), then the
    backlog is read within seconds; the same every period."""
    series = []
    for at in range(0, seconds + 1, every_s):
        into = at % period_s
        series.append((float(at), float(into) if into <= 12 else 0.3))
    return series


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([3.0], 95) == 3.0
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 95) == 95.0 and percentile(values, 100) == 100.0
    assert percentile(list(reversed(values)), 50) == 50.0


def test_a_lag_that_rises_and_falls_with_each_summary_is_bounded_and_flat() -> None:
    verdict = judge_lag(sawtooth(), BOUND_S, SLACK_S)
    assert verdict.bounded and verdict.flat
    assert verdict.max_s == 12.0 and verdict.first_third_max_s == verdict.last_third_max_s == 12.0
    assert all(check.ok for check in verdict.checks())
    assert verdict.samples == 301 and 0.3 <= verdict.p95_s <= 12.0


def test_a_lag_that_keeps_growing_fails_the_trend_before_it_hits_the_bound() -> None:
    growing = [(float(at), at / 30) for at in range(0, 601, 2)]  # 2 s more every minute
    verdict = judge_lag(growing, BOUND_S, SLACK_S)
    assert verdict.bounded  # 20 s at the end: under the bound...
    assert not verdict.flat  # ...but the last third's worst (20 s) is 13.3 s over the first's
    trend = [check for check in verdict.checks() if "trend" in check.name]
    assert not trend[0].ok and "first third 6.7 s" in trend[0].detail


def test_the_lag_trend_is_a_least_squares_slope_per_minute() -> None:
    assert slope_per_min([(float(at), at / 30) for at in range(0, 61, 2)]) == 2.0
    assert slope_per_min([(float(at), 5.0) for at in range(0, 61, 2)]) == 0.0
    assert abs(slope_per_min(sawtooth()) or 0.0) < 0.5  # summaries' sawtooth: no trend
    assert slope_per_min([(0.0, 1.0), (2.0, 3.0)]) is None  # too few to say
    assert judge_lag(sawtooth(), BOUND_S, SLACK_S).as_json()["growth_s_per_min"] is not None


def test_one_lag_over_the_bound_fails_even_when_flat() -> None:
    series = sawtooth()
    series[150] = (series[150][0], BOUND_S + 0.5)  # one summary held the engine too long
    verdict = judge_lag(series, BOUND_S, SLACK_S)
    assert verdict.flat and not verdict.bounded
    assert verdict.max_s == BOUND_S + 0.5


def test_too_few_samples_judge_no_trend_and_none_judge_nothing() -> None:
    few = judge_lag([(0.0, 1.0), (2.0, 1.0)], BOUND_S, SLACK_S)
    assert few.bounded and not few.flat and few.first_third_max_s is None
    none = judge_lag([], BOUND_S, SLACK_S)
    assert not none.bounded and not none.flat


def periodic(starts: list[float], latency_s: float = 8.0) -> list[SummaryTiming]:
    return [
        SummaryTiming(i + 1, "seconds", start, start + latency_s, latency_s)
        for i, start in enumerate(starts)
    ]


def test_summaries_that_start_a_period_after_the_last_one_ended_keep_the_cadence() -> None:
    # Each starts 60 s (or 61: the timer's 1 s tick) after the previous one's end.
    timings = periodic([2.0, 70.0, 139.0, 207.0, 275.0, 343.0, 411.0, 479.0, 547.0])
    shutdown = SummaryTiming(10, "shutdown", 601.0, 605.0, 4.0)
    cadence = judge_cadence([*timings, shutdown], 60.0, 5.0, 600.0)
    assert len(cadence.periodic) == 9  # the shutdown summary is not periodic
    assert cadence.gaps_s == [60.0, 61.0, 60.0, 60.0, 60.0, 60.0, 60.0, 60.0]
    assert cadence.intervals_s[0] == 68.0  # outputs: the period plus the summary's time
    assert all(check.ok for check in cadence.checks())
    doc = cadence.as_json()
    assert doc["periodic"] == 9 and doc["latency_max_s"] == 8.0


def test_a_missing_or_late_summary_breaks_the_cadence() -> None:
    # The summary due near 139 s never came: the next started 129 s after one ended.
    missing = judge_cadence(periodic([2.0, 70.0, 207.0, 275.0]), 60.0, 5.0, 340.0)
    assert [check.ok for check in missing.checks()] == [True, False]
    # None since 275 s: the feed's last 257 s went by without a summary.
    stopped = judge_cadence(periodic([2.0, 70.0, 139.0, 207.0, 275.0]), 60.0, 5.0, 540.0)
    assert [check.ok for check in stopped.checks()] == [False, True]
    # Too early: a summary 30 s after the previous one is not this period's either.
    early = judge_cadence(periodic([2.0, 40.0, 108.0]), 60.0, 5.0, 170.0)
    assert [check.ok for check in early.checks()] == [True, False]
    # None at all in a feed longer than a period.
    assert not judge_cadence([], 60.0, 5.0, 120.0).checks()[0].ok
    assert judge_cadence([], 60.0, 5.0, 30.0).checks()[0].ok  # none due yet


def test_summary_records_are_put_on_the_feeds_clock() -> None:
    records = [
        {"seq": 1, "trigger": "seconds", "time": "2025-01-31T12:01:00.500Z", "latency_s": 2.5},
        {"seq": 2, "trigger": "shutdown", "time": "2025-01-31T12:02:00.000Z", "latency_s": 0.0},
    ]
    fed_at = 1738324800.0  # 2025-01-31T12:00:00Z
    first, second = timings_of(records, fed_at)
    assert (first.start_s, first.end_s, first.trigger) == (58.0, 60.5, "seconds")
    assert (second.start_s, second.end_s, second.seq) == (120.0, 120.0, 2)


def test_lines_must_be_sent_on_time_acknowledged_and_ingested() -> None:
    def failed(**change: object) -> list[str]:
        counts: dict[str, object] = dict(
            planned=300, sent=300, send_exit=0, received=300, ingested=300, max_late_s=0.1
        )
        checks = line_checks(**(counts | change))
        return [check.name.split(":")[1].strip() for check in checks if not check.ok]

    assert failed() == []
    assert failed(sent=120, received=120, ingested=120) == ["every planned line was sent"]
    assert failed(max_late_s=9.0) == ["every line went out within 5 s of its schedule"]
    assert failed(send_exit=1) == ["`streamd send` had every line acknowledged (exit 0)"]
    assert failed(send_exit=None) == ["`streamd send` had every line acknowledged (exit 0)"]
    assert failed(ingested=299) == ["every line sent was received and ingested"]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"rate": 0.0}, "--rate = 0: must be above 0"),
        ({"duration_s": -1.0}, "--duration = -1: must be above 0"),
        ({"interval_tolerance_s": -1.0}, "--interval-tolerance = -1: must be at least 0"),
        ({"rate": 0.01, "duration_s": 10.0}, "sends no line"),
        ({"duration_s": 5.0}, "--sample-every = 2: at most a third of --duration"),
    ],
)
def test_settings_that_cannot_work_name_their_option(
    settings: dict[str, float], message: str
) -> None:
    with pytest.raises(KeepupOptionError, match=message):
        KeepupOptions(**settings)
    assert KeepupOptions().lines == 3000  # the issue's 5 lines/s for 600 s


def status(at_ingesting: float, at_summarizing: float, oldest: float | None) -> dict[str, object]:
    """The parts of a status document a Sample reads."""
    return {
        "sources": {"zmq-acked": {"received": 12, "ingested": 10}},
        "queue": {"depth": 2},
        "lag": {"oldest_unread_s": oldest, "keeps_up": True},
        "tokens": {"per_second_1m": 300.5},
        "engine": {
            "doing": "ingesting",
            "for_s": 0.5,
            "busy_s": {"ingesting": at_ingesting, "summarizing": at_summarizing},
        },
        "summaries": {"emitted": 1},
    }


def test_a_sample_reads_the_status_and_the_engine_share_comes_from_two() -> None:
    first = sample_of(status(100.0, 20.0, None), 0.0, 12, 2**30)
    assert (first.received, first.ingested, first.queue_depth, first.summaries) == (12, 10, 2, 1)
    assert first.oldest_unread_s == 0.0  # nothing waits: no lag
    last = sample_of(status(145.0, 30.0, 1.5), 60.0, 300, None)
    assert last.oldest_unread_s == 1.5 and last.rss_bytes is None
    shares = engine_shares([first, last])  # 45 s ingesting, 10 s summarizing in 60 s
    assert shares == {"ingesting": 0.75, "summarizing": 0.1667, "busy": 0.9167}
    assert engine_shares([first])["busy"] is None
    assert isinstance(first, Sample)


def test_the_command_refuses_a_bad_setting_before_starting_anything(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli_module.main, ["keepup", "--rate", "0"])
    assert result.exit_code == 2
    assert "--rate = 0: must be above 0" in result.output
    assert "daemon: pid" not in result.output  # no daemon, no folder
    (tmp_path / "summaries.jsonl").write_text("{}\n")  # an earlier run's
    result = CliRunner().invoke(cli_module.main, ["keepup", "--workdir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--workdir {tmp_path}: not empty" in result.output


def test_the_help_says_what_is_judged_and_how_to_run_the_issues_measurement() -> None:
    result = CliRunner().invoke(cli_module.main, ["keepup", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("--max-lag", "--lag-slack", "--interval-tolerance", "streamd keepup --report"):
        assert words in text
    assert "[default: 5.0]" in text and "[default: 600.0]" in text and "[default: cpu]" in text
