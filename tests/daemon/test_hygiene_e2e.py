"""Input hygiene through a real daemon: `streamd run` as a subprocess (tiny model, CPU), real
ZeroMQ sockets and a real Mosquitto. Bad bytes are repaired and counted by source and kind;
oversized, empty and malformed messages are rejected, counted by source and reason, and
logged with why; and the session goes on ingesting and summarizing."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from streamd.daemon.tools.testing import Broker, free_tcp_port, free_zmq_endpoint
from tests.daemon.daemon_testing import Daemon, all_counted, daemon_args, log_events, row

pytestmark = pytest.mark.network

MIB = 1024 * 1024  # the default max_message_bytes
LONG_LINE = ("The quick brown fox jumps over the lazy dog. " * 450)[:20_000]
BAD_INPUT = [
    # 0xFF and 0xFE can start no UTF-8 sequence; 0xC3 starts one that "(" does not go on.
    b"Jan 31 12:00:01 host app[7]: bad \xff\xfe bytes and \xc3\x28 here",
    b"Jan 31 12:00:02 host app[7]: NUL\x00 inside\x00 and a bell\x07",
    b"\x1b[31mERROR\x1b[0m Jan 31 12:00:03 host app[7]: colours from journalctl",
    LONG_LINE.encode(),
]
# What the decoder must repair in BAD_INPUT: 3 invalid sequences; 3 control characters
# and 2 escape sequences; 1 line over max_line_chars (4096), cut into pieces.
REPAIRED = {"replaced": 3, "stripped": 5, "cut": 1}


class Setup:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.pull = free_zmq_endpoint()
        self.metrics_port = free_tcp_port()
        self.context = zmq.Context()

    def push(self, *messages: list[bytes]) -> None:
        """Each message as one multipart ZeroMQ message to the daemon's PULL socket."""
        push = self.context.socket(zmq.PUSH)
        push.connect(self.pull)
        try:
            for frames in messages:
                push.send_multipart(frames)
        finally:
            push.close(linger=10_000)

    def publish(self, *payloads: bytes) -> None:
        """QoS 1 to logs/app on the broker, each acknowledged."""
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="hygiene-publisher")
        client.connect(self.broker.host, self.broker.port)
        client.loop_start()
        try:
            for payload in payloads:
                client.publish("logs/app", payload, qos=1).wait_for_publish(10)
        finally:
            client.loop_stop()
            client.disconnect()

    def metric(self, name: str, **labels: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        # Parsed, not matched as text: the exposition sorts label names (prometheus-client).
        samples = (s for f in text_string_to_metric_families(text) for s in f.samples)
        return next((s.value for s in samples if s.name == name and s.labels == labels), 0.0)


@pytest.fixture(scope="module")
def setup(module_mosquitto_factory: Callable[..., Broker]) -> Iterator[Setup]:
    setup = Setup(module_mosquitto_factory())
    yield setup
    setup.context.term()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, setup: Setup
) -> Iterator[Daemon]:
    port = str(setup.broker.port)
    args = daemon_args(
        tiny_model_dir,
        "--zmq-bind", setup.pull, "--metrics-port", str(setup.metrics_port),
        "--mqtt-host", "127.0.0.1", "--mqtt-port", port, "--mqtt-topic", "logs/#",
        "--mqtt-client-id", f"streamd-hygiene-{port}",
    )  # fmt: skip
    daemon = Daemon(tmp_path_factory.mktemp("daemon"), args)
    daemon.start()
    try:
        daemon.wait_ready()
        daemon.wait_status(lambda s: s["sources"]["mqtt"].get("connected"), "the MQTT link")
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()


def settled(status: dict[str, Any], source: str, received: int) -> bool:
    """`received` messages in, none of this source's queued, and every one accounted for."""
    return all_counted(status, source, received) and row(status, source)["queued"] == 0


def test_bad_bytes_are_repaired_counted_and_the_session_goes_on(
    daemon: Daemon, setup: Setup
) -> None:
    before = daemon.status()
    assert before is not None
    start = row(before, "zmq-pull")
    setup.push(*([payload] for payload in BAD_INPUT))
    after = daemon.wait_status(
        lambda s: settled(s, "zmq-pull", start["received"] + len(BAD_INPUT)),
        "the bad input received and ingested",
        timeout_s=60,
    )
    pull = row(after, "zmq-pull")
    # Repaired, not refused: every message reached the model.
    assert pull["ingested"] - start["ingested"] == len(BAD_INPUT)
    assert pull["rejected"] == start["rejected"] and pull["dropped"] == start["dropped"]
    repaired = {
        kind: count - start["repaired_by_kind"].get(kind, 0)
        for kind, count in pull["repaired_by_kind"].items()
    }
    assert repaired == REPAIRED
    # The 20k-character line went in, in pieces: 20k characters of English are more than
    # 2000 tokens (tokens are far shorter than 10 characters).
    assert after["tokens"]["ingested"] - before["tokens"]["ingested"] > 2000

    for kind, count in REPAIRED.items():  # the same counts on the Prometheus endpoint
        assert setup.metric("streamd_ingest_repaired_total", source="zmq-pull", kind=kind) == (
            start["repaired_by_kind"].get(kind, 0) + count
        )
    table = daemon.ctl("status")
    assert table.returncode == 0, table.stderr
    assert re.search(r"zmq-pull .*; repaired: cut \d+, replaced \d+, stripped \d+", table.stdout)

    record = daemon.summarize()
    assert record["stream_tokens"] == after["tokens"]["ingested"]
    assert record["generated_tokens"] >= 1


def test_oversized_empty_and_malformed_messages_are_rejected_by_source_and_reason(
    daemon: Daemon, setup: Setup
) -> None:
    before = daemon.status()
    assert before is not None
    pull, mqtt = row(before, "zmq-pull"), row(before, "mqtt")
    half = b"x" * (MIB // 2 + 1)  # two frames under ZMQ_MAXMSGSIZE, one message over the limit
    setup.push([half, half], [b"  \n\t\n"], [b'{"text": 5}'], [b"Jan 31 12:00:04 host ok"])
    setup.publish(b"y" * (MIB + 1), b"Jan 31 12:00:05 host app[7]: still here")

    def both_settled(s: dict[str, Any]) -> bool:
        return settled(s, "zmq-pull", pull["received"] + 4) and settled(
            s, "mqtt", mqtt["received"] + 2
        )

    after = daemon.wait_status(both_settled, "the messages received and counted")

    def new(source: str, field: str, old: dict[str, Any]) -> dict[str, int]:
        counts = row(after, source)[field]
        return {k: v - old[field].get(k, 0) for k, v in counts.items() if v != old[field].get(k)}

    assert new("zmq-pull", "rejected_by_reason", pull) == {
        "too_large": 1,
        "empty": 1,
        "bad_json_envelope": 1,
    }
    assert new("mqtt", "rejected_by_reason", mqtt) == {"too_large": 1}
    assert row(after, "mqtt")["ingested"] == mqtt["ingested"] + 1
    assert row(after, "zmq-pull")["ingested"] == pull["ingested"] + 1
    assert setup.metric("streamd_ingest_rejected_total", source="mqtt", reason="too_large") == 1

    # The log says why, once per source and reason.
    rejections = [e for e in log_events(daemon.log_path) if e.get("event") == "message rejected"]
    mqtt_too_large = [e for e in rejections if (e["source"], e["reason"]) == ("mqtt", "too_large")]
    assert [e["detail"] for e in mqtt_too_large] == [f"{MIB + 1} bytes > max_message_bytes {MIB}"]
    assert mqtt_too_large[0]["level"] == "warning"
