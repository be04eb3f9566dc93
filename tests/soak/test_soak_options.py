"""`streamd soak`'s settings: checked at the edge with the option named, and the faults'
timeline they make."""

from __future__ import annotations

import pytest

from streamd.daemon.tools.soak.options import SoakOptionError, SoakOptions, schedule
from tests.daemon.daemon_testing import cli


def test_a_setting_that_cannot_work_is_refused_naming_the_option() -> None:
    with pytest.raises(SoakOptionError, match=r"--warmup = 30: must be under half of --duration"):
        SoakOptions(duration_s=60, warmup_s=30)
    with pytest.raises(SoakOptionError, match=r"--malformed = 1: must be at least 0, below 1"):
        SoakOptions(malformed=1.0)
    with pytest.raises(SoakOptionError, match=r"--summary-every-tokens = -1: must be at least 0"):
        SoakOptions(summary_every_tokens=-1)


def test_the_command_refuses_it_before_starting_anything() -> None:
    done = cli("soak", "--duration", "20", "--warmup", "12")
    assert done.returncode == 2
    assert "--warmup = 12: must be under half of --duration (20)" in done.stderr
    assert "working in" not in done.stderr  # no broker, no daemon, no folder


def test_faults_are_spread_over_the_run_with_the_daemon_stops_between_broker_restarts() -> None:
    options = SoakOptions(duration_s=120, broker_restarts=3, sigterms=1, sigkills=1)
    assert schedule(options) == [
        (20.0, "broker"), (40.0, "sigterm"), (60.0, "broker"), (80.0, "sigkill"),
        (100.0, "broker"),
    ]  # fmt: skip
    two_kills = schedule(SoakOptions(duration_s=60, broker_restarts=0, sigterms=0, sigkills=2))
    assert two_kills == [(20.0, "sigkill"), (40.0, "sigkill")]
    assert schedule(SoakOptions(broker_restarts=0, sigterms=0, sigkills=0)) == []
    with pytest.raises(SoakOptionError, match=r"--sigkills = -1: must be at least 0"):
        SoakOptions(sigkills=-1)
