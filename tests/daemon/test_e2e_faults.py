"""Fault injection under the daemon as a real process (tiny model, CPU): the MQTT broker
killed or restarted mid-stream, ZeroMQ senders killed mid-message.

The faults are real: a real Mosquitto stopped with SIGTERM or SIGKILL and started
again on its port, real sender processes SIGKILLed. One daemon serves the module;
tests read its counters as differences.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from streamd.daemon.tools.testing import CLI, Broker, clean_env, free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, daemon_args, row, sample_log_lines

pytestmark = pytest.mark.network

RECOVERY_TIMEOUT_S = 60.0  # the daemon's reconnect backoff doubles: 0.5, 1, 2, 4 s...


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, module_mosquitto_factory: Callable[..., Broker]
) -> Broker:
    """Persistent, as a production broker is: the daemon's session and the QoS 1 messages
    queued for it survive a restart."""
    workdir = tmp_path_factory.mktemp("mosquitto")
    return module_mosquitto_factory(workdir, persistence_dir=workdir / "db", save_every_change=True)


@pytest.fixture(scope="module")
def pull() -> str:
    return free_zmq_endpoint()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, broker: Broker, pull: str
) -> Iterator[Daemon]:
    port = str(broker.port)
    args = daemon_args(
        tiny_model_dir, "--zmq-bind", pull, "--mqtt-host", broker.host, "--mqtt-port", port,
        "--mqtt-topic", "logs/#", "--mqtt-client-id", f"streamd-faults-{port}",
    )  # fmt: skip
    daemon = Daemon(tmp_path_factory.mktemp("daemon"), args)
    daemon.start()
    try:
        daemon.wait_ready()
        daemon.wait_status(lambda s: s["sources"]["mqtt"]["connected"], "the MQTT link")
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()


def accounted(status: dict[str, Any], source: str) -> bool:
    """Every message received from `source` is ingested, dropped or rejected: none is
    queued or in a batch on the engine thread. (Not all_counted: queued is left out of
    the sum, and the daemon's whole queue must be empty.)"""
    counts = row(status, source)
    done = counts["ingested"] + counts["dropped"] + counts["rejected"]
    return counts["received"] == done and status["queue"]["depth"] == 0


def settled(status: dict[str, Any], source: str, received: int) -> bool:
    """`received` messages came from `source`, each accounted for."""
    return row(status, source)["received"] == received and accounted(status, source)


# --- the MQTT broker goes away -----------------------------------------------------------


class QueueingPublisher:
    """A paho client on its own network thread. While the broker is away it keeps QoS 1
    publishes and sends them once it has reconnected (every second it tries)."""

    def __init__(self, broker: Broker) -> None:
        self._acknowledged: set[int] = set()
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"faults-publisher-{broker.port}",
            protocol=paho.MQTTv5,
        )  # fmt: skip
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self._acknowledged.add(mid)

    def publish(self, count: int, label: str) -> set[int]:
        """`count` QoS 1 messages; their ids. Not connected, paho queues them (rc NO_CONN)."""
        mids = set()
        for i in range(count):
            info = self.client.publish("logs/app", f"{label} line {i}: disk 91% full", qos=1)
            assert info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN), info.rc
            mids.add(info.mid)
        return mids

    def acknowledged(self, mids: set[int]) -> bool:
        with self._lock:
            return mids <= self._acknowledged

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("kill", [False, True], ids=["restarted", "killed"])
def test_qos1_messages_published_while_the_broker_was_down_all_arrive(
    daemon: Daemon, broker: Broker, kill: bool
) -> None:
    """At least once, across a broker restart: the daemon reconnects by itself, and its
    persistent session (kept by the broker) gets every QoS 1 message published meanwhile."""
    before = daemon.wait_status(lambda s: s["sources"]["mqtt"]["connected"], "the MQTT link")
    start = row(before, "mqtt")
    publisher = QueueingPublisher(broker)
    try:
        # Mid-stream: the daemon is taking messages when the broker goes.
        first = publisher.publish(5, "before")
        wait_until(lambda: publisher.acknowledged(first), "the broker to take 5 messages")
        daemon.wait_status(lambda s: settled(s, "mqtt", start["received"] + 5), "5 in")

        broker.stop(kill=kill)
        daemon.wait_status(lambda s: not s["sources"]["mqtt"]["connected"], "the link to drop")
        meanwhile = publisher.publish(20, "meanwhile")  # queued by the publisher's client
        broker.start()
        wait_until(
            lambda: publisher.acknowledged(meanwhile),
            "the restarted broker to take the queued messages",
            RECOVERY_TIMEOUT_S,
        )
        after = daemon.wait_status(
            lambda s: (
                s["sources"]["mqtt"]["connected"]
                and row(s, "mqtt")["received"] >= start["received"] + 25
                and accounted(s, "mqtt")
            ),
            "the daemon back on the broker with all 25 messages",
            RECOVERY_TIMEOUT_S,
        )
    finally:
        publisher.close()
    counts = row(after, "mqtt")
    # At least once: a message the broker saved as in flight may come twice after a kill.
    assert counts["received"] - start["received"] >= 25
    assert counts["rejected"] == start["rejected"] and counts["dropped"] == start["dropped"]
    assert counts["reconnects"] > start["reconnects"]
    assert after["state"] == "ready"


# --- ZeroMQ senders that die ---------------------------------------------------------------

# A sender process: `complete` whole messages, then two frames of a multipart message whose
# last frame never comes (SNDMORE), then it waits to be killed.
DYING_SENDER = """
import sys, zmq
push = zmq.Context().socket(zmq.PUSH)
push.connect(sys.argv[1])
for i in range(int(sys.argv[2])):
    push.send(b"complete line %d" % i)
push.send(b"first frame of a message whose last frame never comes", zmq.SNDMORE)
push.send(b"second frame", zmq.SNDMORE)
print("mid-message", flush=True)
sys.stdin.read()
"""


def test_a_sender_killed_mid_message_leaves_no_partial_message(daemon: Daemon, pull: str) -> None:
    """ZeroMQ delivers a multipart message whole or not at all: the daemon gets the
    complete messages, never the torn one, and later senders get through."""
    before = row(
        daemon.wait_status(lambda s: s["queue"]["depth"] == 0, "a quiet queue"), "zmq-pull"
    )
    command = [sys.executable, "-c", DYING_SENDER, pull, "4"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as sender:
        try:
            assert sender.stdout is not None and sender.stdout.readline() == b"mid-message\n"
            daemon.wait_status(
                lambda s: row(s, "zmq-pull")["received"] == before["received"] + 4, "4 lines"
            )
        finally:
            sender.kill()  # SIGKILL, in the middle of the multipart message
    done = cli("send", "--push", "--connect", pull, stdin=sample_log_lines(3))
    assert done.returncode == 0, done.stderr

    after = daemon.wait_status(
        lambda s: settled(s, "zmq-pull", before["received"] + 7), "the later sender's 3 lines"
    )
    counts = row(after, "zmq-pull")
    assert counts["ingested"] - before["ingested"] == 7  # 4 complete + 3, nothing torn
    assert counts["rejected"] == before["rejected"]
    assert after["state"] == "ready"


def test_streamd_send_killed_mid_stream_loses_only_its_unfinished_line(
    daemon: Daemon, pull: str
) -> None:
    before = row(
        daemon.wait_status(lambda s: s["queue"]["depth"] == 0, "a quiet queue"), "zmq-pull"
    )
    command = [*CLI, "send", "--push", "--connect", pull]
    with subprocess.Popen(command, stdin=subprocess.PIPE, env=clean_env()) as sender:
        try:
            assert sender.stdin is not None
            sender.stdin.write(sample_log_lines(10))
            sender.stdin.flush()
            daemon.wait_status(
                lambda s: row(s, "zmq-pull")["received"] == before["received"] + 10, "10 lines"
            )
            sender.stdin.write(b"Nov 28 06:00:01 host sshd[42]: half a li")  # no newline yet
            sender.stdin.flush()
        finally:
            sender.kill()  # SIGKILL, mid-stream
    done = cli("send", "--push", "--connect", pull, stdin=sample_log_lines(4))
    assert done.returncode == 0, done.stderr

    after = daemon.wait_status(
        lambda s: settled(s, "zmq-pull", before["received"] + 14), "the next sender's 4 lines"
    )
    counts = row(after, "zmq-pull")
    assert counts["ingested"] - before["ingested"] == 14
    assert counts["rejected"] == before["rejected"]
    assert after["state"] == "ready"
