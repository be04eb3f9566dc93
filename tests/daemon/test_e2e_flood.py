"""#11 observation 4: a ZeroMQ flood starved the event loop (`status` took 27 s, the systemd
watchdog went 58 s without a ping). Through a real daemon (tiny model, CPU) and a sender
that pushes as fast as ZeroMQ takes messages: the watchdog keeps pinging and `status`
answers all through the flood."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

from streamd.daemon.control.client import ControlClient
from streamd.daemon.tools.testing import clean_env, free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, NotifySocket, daemon_args
from tests.daemon.flooding import Flood

pytestmark = pytest.mark.network

WATCHDOG_USEC = 1_000_000  # pings every 0.5 s
# The unit's WatchdogSec is 30 s; a loop that answers at all answers in milliseconds, so
# these only fail when the flood holds the loop (they are generous for a loaded CI box).
STATUS_LIMIT_S = 20.0
PING_GAP_LIMIT_S = 15.0
STATUS_CHECKS = 5


class TimedNotifySocket(NotifySocket):
    """The notify socket, with the arrival time of each datagram."""

    def __init__(self, path: Path) -> None:
        self.times: list[float] = []
        super().__init__(path)

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                message = self._sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.times.append(time.monotonic())
            self.messages.append(message)

    def pings_since(self, since: float) -> list[float]:
        pings = zip(self.times, self.messages, strict=False)
        return [at for at, text in pings if at >= since and "WATCHDOG=1" in text.split("\n")]


def test_status_and_the_watchdog_answer_through_a_zeromq_flood(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    endpoint = free_zmq_endpoint()
    notify = TimedNotifySocket(tmp_path / "notify.sock")
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
    args = daemon_args(
        tiny_model_dir, "--zmq-bind", endpoint, "--zmq-pull-backpressure", "drop-oldest",
        "--queue-max-chars", "65536",
    )  # fmt: skip
    daemon = Daemon(tmp_path, args, env)
    daemon.start()
    try:
        daemon.wait_ready()
        with Flood(endpoint):
            # The flood is on once the daemon has taken in a good part of it.
            daemon.wait_status(
                lambda s: s["sources"]["zmq-pull"]["received"] > 5_000, "the flood to arrive"
            )
            flooding_since = time.monotonic()
            for _ in range(STATUS_CHECKS):
                asked = time.monotonic()
                with ControlClient(daemon.control, STATUS_LIMIT_S) as client:
                    status = client.request("status")
                assert status["state"] == "ready"
                assert time.monotonic() - asked < STATUS_LIMIT_S
            wait_until(
                lambda: len(notify.pings_since(flooding_since)) >= 5,
                "five watchdog pings during the flood",
            )
            received = daemon.status()
            assert received is not None
        pings = notify.pings_since(flooding_since)
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        assert max(gaps) < PING_GAP_LIMIT_S, gaps
        assert received["sources"]["zmq-pull"]["received"] > 5_000
    finally:
        code = daemon.stop()
        notify.close()
    assert code == 0, daemon.log()
