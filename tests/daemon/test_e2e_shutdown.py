"""Start and stop as systemd sees them: sd_notify on a real NOTIFY_SOCKET, SIGTERM, exit codes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamd.daemon.tools.testing import clean_env, free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import (
    Daemon,
    NotifySocket,
    cli,
    daemon_args,
    log_events,
    sample_log_lines,
    signal_name,
)

pytestmark = pytest.mark.network


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.close()


def test_sigterm_writes_a_final_summary_and_systemd_hears_every_step(
    tmp_path: Path, tiny_model_dir: Path, notify: NotifySocket
) -> None:
    pull = free_zmq_endpoint()
    # WATCHDOG_USEC as systemd sets it for WatchdogSec=0.2: pings every 0.1 s.
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="200000")
    daemon = Daemon(tmp_path, daemon_args(tiny_model_dir, "--zmq-bind", pull), env)
    daemon.start()
    try:
        daemon.wait_ready()
        assert notify.saw("READY=1")
        wait_until(lambda: notify.saw("WATCHDOG=1"), "a watchdog ping")
        done = cli("send", "--push", "--connect", pull, stdin=sample_log_lines(8))
        assert done.returncode == 0, done.stderr
        daemon.wait_status(lambda s: s["sources"]["zmq-pull"]["received"] == 8, "8 lines")
    finally:
        code = daemon.stop()
    assert code == 0, f"exit {signal_name(code)}:\n{daemon.log()}"

    final = daemon.summaries()[-1]
    assert final["trigger"] == "shutdown" and final["stream_tokens"] > 0
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines)  # while loading
    assert any(line.startswith("STATUS=starting") for line in lines)
    assert any(line.startswith("STATUS=ready") for line in lines)
    assert not daemon.control.exists()  # the socket file is removed on the way out

    gone = cli("status", "--control-socket", str(daemon.control))
    assert gone.returncode == 1
    assert "no streamd daemon answering" in gone.stderr

    # The last log line accounts for every message: all 8 ingested, none lost uncounted.
    stopped = [event for event in log_events(daemon.log_path) if event.get("event") == "stopped"]
    pull = stopped[-1]["sources"]["zmq-pull"]
    assert (pull["received"], pull["ingested"], pull["dropped"], pull["rejected"]) == (8, 8, 0, 0)


def test_a_signal_while_the_model_loads_exits_cleanly(tmp_path: Path, tiny_model_dir: Path) -> None:
    daemon = Daemon(tmp_path, daemon_args(tiny_model_dir, "--zmq-bind", free_zmq_endpoint()))
    daemon.start()
    try:
        first = daemon.wait_status(lambda s: True, "the control socket", timeout_s=30)
    finally:
        code = daemon.stop()
    # Usually "starting": the control socket answers seconds before the model is loaded.
    assert first["state"] in ("starting", "ready")
    assert code == 0, daemon.log()
    assert daemon.summaries() == []  # no text came: nothing to summarize


def test_a_second_sigterm_abandons_a_slow_shutdown_and_exits_1(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    pull = free_zmq_endpoint()
    # 3500 summary tokens take the tiny model many seconds on a CPU: the final summary is
    # still being written when the second signal comes. (Plain: a grounded summary ends
    # its sentences within a few dozen tokens each, whatever the budget.)
    args = daemon_args(
        tiny_model_dir,
        "--zmq-bind",
        pull,
        "--summary-max-tokens",
        "3500",
        "--summary-mode",
        "plain",
    )
    daemon = Daemon(tmp_path, args)
    daemon.start()
    try:
        daemon.wait_ready()
        assert cli("send", "--push", "--connect", pull, stdin=sample_log_lines(4)).returncode == 0
        daemon.wait_status(lambda s: s["tokens"]["ingested"] > 0, "the lines ingested")
        daemon.signal(signal.SIGTERM)
        daemon.wait_status(lambda s: s["state"] == "stopping", "the shutdown to begin")
        began = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.wait_exit(timeout_s=15)
    finally:
        daemon.stop()
    assert code == 1, f"exit {signal_name(code)}:\n{daemon.log()}"
    assert time.monotonic() - began < 8, "the forced exit waited for the summary"
    assert daemon.summaries() == []  # the final summary was abandoned
    assert "second signal: exiting now" in daemon.log()
