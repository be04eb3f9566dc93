"""The share of engine time summaries may take, the lag, and a summary's time budget (the
real session on the tiny model): the parts of issue #11's fair scheduling that need no
daemon process (tests/daemon/test_e2e_fairness.py has those)."""

from __future__ import annotations

import time

import pytest

from streamd.daemon.config import ConfigError, load_config
from streamd.daemon.engine.api import Deadline
from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.engine.session import Session, SessionConfig
from streamd.daemon.scheduling.fairness import SummaryShare, lag_status
from streamd.daemon.shutdown import StopClock
from streamd.facts.sentences import complete_sentences

LOG = "\n".join(
    f"Nov 28 04:{i:02d}:00 web-{i % 3} sshd[{1000 + i}]: Failed password for root from 10.0.0.{i}"
    for i in range(40)
)


def test_after_a_summary_ingest_gets_three_times_its_time_first_while_behind() -> None:
    share = SummaryShare()
    assert share.allows(0.25, behind=True, ingest_s=0.0)  # the first one is free
    share.spent(0.25, summary_s=10.0, ingest_s=5.0)
    assert share.owed_s(5.0) == 30.0  # 10 s * (1 - 0.25) / 0.25
    assert not share.allows(0.25, behind=True, ingest_s=34.9)
    assert share.allows(0.25, behind=True, ingest_s=35.0)
    assert share.allows(0.25, behind=False, ingest_s=5.0)  # nothing waits: no limit
    assert share.allows(1.0, behind=True, ingest_s=5.0)  # 1 turns the limit off
    # A request summary that ran meanwhile counts too: the debt adds up.
    share.spent(0.5, summary_s=2.0, ingest_s=6.0)
    assert share.owed_s(6.0) == pytest.approx(31.0)


class _Queue:
    def __init__(self, depth: int, chars: int, age_s: float | None) -> None:
        self.depth, self.chars = depth, chars
        self._arrival = None if age_s is None else time.monotonic() - age_s

    def oldest_arrival(self) -> float | None:
        return self._arrival


def test_lag_says_how_far_behind_and_whether_it_keeps_up() -> None:
    behind = lag_status(_Queue(3, 4001, 75.0), max_lag_s=60.0)
    assert behind.pop("oldest_unread_s") == pytest.approx(75.0, abs=1.0)
    assert behind == {
        "queued_messages": 3,
        "queued_chars": 4001,
        "queued_tokens_estimate": 1000,
        "max_lag_s": 60.0,
        "keeps_up": False,
    }
    assert lag_status(_Queue(1, 80, 2.0), 60.0)["keeps_up"]
    empty = lag_status(_Queue(0, 0, None), 60.0)
    assert empty["keeps_up"] and empty["oldest_unread_s"] is None
    # A batch the ingest loop took waits on the engine (behind a summary): still unread.
    taken = lag_status(_Queue(0, 0, None), 60.0, batch_since=time.monotonic() - 90)
    assert not taken["keeps_up"] and taken["oldest_unread_s"] >= 90


def test_a_deadline_is_brought_forward_never_back() -> None:
    assert not Deadline().passed() and not Deadline(0).passed()  # 0: no limit
    deadline = Deadline(3600)
    assert not deadline.passed()
    deadline.cut()
    assert deadline.passed()


def test_the_stop_clock_keeps_a_reserve_for_the_last_steps() -> None:
    clock = StopClock(10.0)
    assert 6.9 < clock.left(3.0) <= 7.0
    assert clock.left(11.0) == 0.0


def _session(loaded: LoadedModel, mode: str, max_tokens: int = 3500) -> Session:
    config = SessionConfig(
        max_capacity=256, chunk=32, summary_max_tokens=max_tokens, summary_mode=mode
    )
    session = Session(config, loaded)
    session.ingest(LOG)
    return session


def test_a_plain_summary_past_its_deadline_stops_and_ends_at_a_whole_sentence(
    tiny_loaded: LoadedModel,
) -> None:
    session = _session(tiny_loaded, "plain")
    deadline = Deadline(3600)
    deadline.cut()  # as a shutdown does to the summary running
    summary = session.summarize(deadline=deadline)
    assert summary.time_limited
    assert summary.generated_tokens < 3500
    assert summary.text == complete_sentences(summary.text)[0]  # nothing cut mid-sentence


def test_a_grounded_summary_past_its_deadline_keeps_its_facts_sentences(
    tiny_loaded: LoadedModel,
) -> None:
    session = _session(tiny_loaded, "grounded", max_tokens=128)
    deadline = Deadline(3600)
    deadline.cut()
    summary = session.summarize(deadline=deadline)
    assert summary.time_limited and summary.generated_tokens == 0  # the model wrote nothing
    assert summary.text.startswith("40 new lines") and summary.text.endswith(".")
    unhurried = session.summarize(deadline=Deadline(3600))
    assert not unhurried.time_limited and unhurried.generated_tokens > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"engine.summary_share": "0"},
            "engine.summary_share = 0.0: must be a number from 0.01 to 1; 1 turns the limit off",
        ),
        (
            {"shutdown.timeout_seconds": "90", "shutdown.final_summary_seconds": "90"},
            "shutdown.final_summary_seconds = 90.0: must be below shutdown.timeout_seconds (90)",
        ),
        (
            {"shutdown.timeout_seconds": "2"},
            "shutdown.timeout_seconds = 2.0: must be a number from 5 to 3600; keep it under "
            "TimeoutStopSec (60)",
        ),
        ({"summary.max_seconds": "-1"}, "summary.max_seconds = -1.0: must be a number >= 0"),
    ],
)
def test_scheduling_settings_that_cannot_work_name_the_key_and_the_fix(
    overrides: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(None, overrides=overrides, environ={})
    assert message in str(error.value)
