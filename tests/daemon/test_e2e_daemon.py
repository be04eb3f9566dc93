"""The daemon end to end: `streamd run` as a subprocess (tiny model, CPU), a real Mosquitto,
real ZeroMQ sockets, and the CLI as users run it.

One daemon serves the whole module (it takes ~6 s to start); tests read counters as
differences, and a test that changes a setting puts it back.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from streamd.daemon.tools.testing import CLI, Broker, free_tcp_port, free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, daemon_args, sample_log_lines

pytestmark = pytest.mark.network

SUMMARY_TOPIC = "streamd/test/summaries"


class Endpoints:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.pull = free_zmq_endpoint()
        self.pub = free_zmq_endpoint()
        self.metrics_port = free_tcp_port()
        self.context = zmq.Context()
        # The test's own publisher, which the daemon's SUB source connects to.
        self.publisher = self.context.socket(zmq.PUB)
        self.sub_source = f"tcp://127.0.0.1:{self.publisher.bind_to_random_port('tcp://127.0.0.1')}"

    def close(self) -> None:
        self.publisher.close(linger=0)
        self.context.term()


@pytest.fixture(scope="module")
def broker(module_mosquitto_factory: Callable[..., Broker]) -> Broker:
    return module_mosquitto_factory()


@pytest.fixture(scope="module")
def endpoints(broker: Broker) -> Iterator[Endpoints]:
    endpoints = Endpoints(broker)
    yield endpoints
    endpoints.close()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, endpoints: Endpoints
) -> Iterator[Daemon]:
    port = str(endpoints.broker.port)
    args = daemon_args(
        tiny_model_dir,
        "--zmq-bind", endpoints.pull, "--zmq-sub", endpoints.sub_source,
        "--zmq-pub", endpoints.pub, "--metrics-port", str(endpoints.metrics_port),
        "--mqtt-host", "127.0.0.1", "--mqtt-port", port, "--mqtt-topic", "logs/#",
        "--mqtt-client-id", f"streamd-test-{port}", "--mqtt-summary-topic", SUMMARY_TOPIC,
    )  # fmt: skip
    daemon = Daemon(tmp_path_factory.mktemp("daemon"), args)
    daemon.start()
    try:
        daemon.wait_ready()
        # Subscribed: QoS 1 messages published from now on reach the daemon.
        daemon.wait_status(lambda s: s["sources"]["mqtt"].get("connected"), "the MQTT link")
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()


def send(daemon: Daemon, *args: str, lines: bytes) -> None:
    done = cli("send", *args, stdin=lines)
    assert done.returncode == 0, done.stderr


def received(status: dict[str, Any], source: str) -> int:
    return int(status["sources"][source]["received"])


# --- status ------------------------------------------------------------------------------


def test_status_reports_a_ready_daemon(daemon: Daemon, tiny_model_dir: Path) -> None:
    status = daemon.status()
    assert status is not None
    assert (status["state"], status["model"], status["device"]) == (
        "ready", str(tiny_model_dir), "cpu",
    )  # fmt: skip
    cache = status["cache"]
    assert cache["max_capacity"] == 256 == cache["pinned"] + cache["window"]
    assert all(isinstance(cache[key], int) for key in ("used", "pinned", "window", "bytes"))
    assert cache["bytes"] > 0
    assert status["gpu"] == {"available": False, "reason": "no GPU"}
    assert set(status["sources"]) == {"zmq-pull", "zmq-acked", "zmq-sub", "mqtt"}
    assert status["outputs"] == ["jsonl", "zmq-pub", "mqtt"]
    assert {"ingested", "evicted", "per_second_1m"} <= set(status["tokens"])
    assert {"emitted", "last_age_s"} <= set(status["summaries"])
    assert {"prefill_chunk_s", "summary_ttft_s", "summary_tpot_s"} == set(status["latency"])

    table = daemon.ctl("status")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("state ") and "ready" in table.stdout
    assert "no GPU" in table.stdout and "zmq-pull" in table.stdout


# --- text in -----------------------------------------------------------------------------


def test_lines_sent_over_zmq_and_mqtt_are_counted_by_source(
    daemon: Daemon, endpoints: Endpoints
) -> None:
    before = daemon.status()
    assert before is not None
    send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(12))
    mqtt = ["--mqtt-host", "127.0.0.1", "--mqtt-port", str(endpoints.broker.port)]
    # The last line is an envelope without text: rejected, and counted with its reason.
    lines = sample_log_lines(5) + b'{"text": 5}\n'
    send(daemon, *mqtt, "--mqtt-topic", "logs/app", lines=lines)

    after = daemon.wait_status(
        lambda s: (
            received(s, "zmq-pull") >= received(before, "zmq-pull") + 12
            and received(s, "mqtt") >= received(before, "mqtt") + 6
            and s["tokens"]["ingested"] > before["tokens"]["ingested"]
            and s["queue"]["depth"] == 0
        ),
        "12 zmq lines and 6 mqtt messages",
    )
    assert received(after, "zmq-pull") == received(before, "zmq-pull") + 12
    assert received(after, "mqtt") == received(before, "mqtt") + 6
    mqtt_row = after["sources"]["mqtt"]
    assert mqtt_row["rejected_by_reason"].get("bad_json_envelope", 0) >= 1
    assert after["sources"]["zmq-pull"]["rejected"] == before["sources"]["zmq-pull"]["rejected"]


def test_lines_published_to_the_sub_source_are_ingested(
    daemon: Daemon, endpoints: Endpoints
) -> None:
    before = daemon.status()
    assert before is not None

    def published_and_seen() -> bool:
        # PUB/SUB drops what is sent before the subscription lands: publish until seen.
        endpoints.publisher.send_multipart([b"logs", sample_log_lines(1)])
        status = daemon.status()
        return status is not None and received(status, "zmq-sub") > received(before, "zmq-sub")

    wait_until(published_and_seen, "a line on the SUB source")


def test_every_message_is_accounted_for_by_source(daemon: Daemon, endpoints: Endpoints) -> None:
    """received = ingested + dropped + rejected + queued, per source; a message taken in
    parts counts once."""
    before = daemon.status()
    assert before is not None
    big = sample_log_lines(200)  # ~20 KB: ingested in many batches
    payloads = [*sample_log_lines(10).splitlines(), b'{"text": 5}', b"  ", b'{"source": "x"}', big]
    push = endpoints.context.socket(zmq.PUSH)
    push.connect(endpoints.pull)
    try:
        for payload in payloads:
            push.send(payload)
    finally:
        push.close(linger=5000)

    def settled(s: dict[str, Any]) -> bool:
        row = s["sources"]["zmq-pull"]
        accounted = row["ingested"] + row["dropped"] + row["rejected"] + row["queued"]
        done = row["queued"] == 0 and s["queue"]["depth"] == 0
        return done and row["received"] == received(before, "zmq-pull") + 14 == accounted

    after = daemon.wait_status(settled, "every message counted once")
    row, old = after["sources"]["zmq-pull"], before["sources"]["zmq-pull"]
    assert (row["ingested"] - old["ingested"], row["rejected"] - old["rejected"]) == (11, 3)
    assert row["dropped"] == old["dropped"] and row["queued"] == 0
    for name, source in after["sources"].items():  # the identity holds for every source
        total = source["ingested"] + source["dropped"] + source["rejected"] + source["queued"]
        assert source["received"] == total, name


# --- summaries out -----------------------------------------------------------------------


class MqttInbox:
    """A paho subscriber on its own network thread, keeping every payload as JSON."""

    def __init__(self, port: int, topic: str) -> None:
        self.records: list[dict[str, Any]] = []
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.records.append(json.loads(m.payload))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "could not subscribe to the summary topic"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_summary_reaches_every_output(daemon: Daemon, endpoints: Endpoints) -> None:
    context = zmq.Context()
    subscriber = context.socket(zmq.SUB)
    subscriber.setsockopt(zmq.SUBSCRIBE, b"")
    subscriber.connect(endpoints.pub)
    inbox = MqttInbox(endpoints.broker.port, SUMMARY_TOPIC)
    try:

        def summary_on_zmq() -> dict[str, Any] | None:
            # A new subscriber misses what is published before it is connected: ask again.
            record = daemon.summarize()
            if subscriber.poll(1000):
                got = json.loads(subscriber.recv())
                return got if got["seq"] == record["seq"] else None
            return None

        record = wait_until(summary_on_zmq, "a summary on the ZeroMQ PUB socket")
        wait_until(lambda: any(r["seq"] == record["seq"] for r in inbox.records), "MQTT")
    finally:
        inbox.close()
        subscriber.close(linger=0)
        context.term()
    in_file = [r for r in daemon.summaries() if r["seq"] == record["seq"]]
    assert in_file == [record]
    keys = {"seq", "time", "stream_tokens", "window_first", "window_last", "text", "latency_s",
            "ttft_s", "tpot_s", "generated_tokens", "model", "trigger", "facts",
            "verification"}  # fmt: skip
    assert set(record) == keys
    assert record["trigger"] == "request" and record["time"].endswith("Z")
    assert isinstance(record["text"], str) and record["generated_tokens"] >= 1


def test_summarize_prints_the_summary_for_people(daemon: Daemon) -> None:
    done = daemon.ctl("summarize")
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    assert header.startswith("#") and "[request]" in header and "stream tokens" in header


def test_summaries_lists_recent_ones_and_follow_prints_new_ones(daemon: Daemon) -> None:
    last_seq = daemon.summarize()["seq"]
    recent = daemon.ctl("summaries", "--json", "--last", "2")
    assert recent.returncode == 0, recent.stderr
    assert [json.loads(line)["seq"] for line in recent.stdout.splitlines()][-1] == last_seq

    command = ["summaries", "--follow", "--json", "--control-socket", str(daemon.control)]
    with subprocess.Popen([*CLI, *command], stdout=subprocess.PIPE, text=True) as follower:
        printed: list[dict[str, Any]] = []
        reader = threading.Thread(
            target=lambda: printed.extend(json.loads(line) for line in follower.stdout or []),
            daemon=True,
        )
        reader.start()

        def followed() -> bool:
            daemon.summarize()  # until the follower, once it is polling, prints one
            return bool(printed)

        try:
            wait_until(followed, "summaries --follow to print a new summary")
        finally:
            follower.terminate()
        reader.join(10)
    assert printed[0]["seq"] > last_seq


# --- tuning ------------------------------------------------------------------------------


def test_tune_max_capacity_changes_status_and_what_the_cache_holds(
    daemon: Daemon, endpoints: Endpoints
) -> None:
    send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(20))
    full = daemon.wait_status(lambda s: s["cache"]["used"] == 256, "a full cache of 256")
    pinned = full["cache"]["pinned"]
    # refresh auto on a CPU at 256: twice per window streamed, once the window slides
    assert full["cache"]["refresh_every"] == (256 - pinned) // 2
    send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(20))
    daemon.wait_status(lambda s: s["cache"]["refreshes"] >= 1, "a refresh of the window")
    assert "window refreshed every" in daemon.ctl("status").stdout

    shrink = daemon.ctl("tune", "--max-capacity", "128")
    assert shrink.returncode == 0, shrink.stderr
    assert shrink.stdout.strip() == "max_capacity: 256 -> 128"
    status = daemon.status()
    assert status is not None
    cache = status["cache"]
    assert (cache["max_capacity"], cache["window"], cache["used"]) == (128, 128 - pinned, 128)

    grow = daemon.ctl("tune", "--max-capacity", "256")
    assert grow.stdout.strip() == "max_capacity: 128 -> 256"
    send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(20))
    daemon.wait_status(lambda s: s["cache"]["used"] == 256, "the cache to fill 256 again")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("3", "cache.max_capacity = 3: must be an integer from 8 to"),
        ("20", "must be an integer above the pinned prefix of"),
        ("100000", "exceeds the model's trained context of 4096 positions"),
    ],
)
def test_tune_refuses_a_value_that_cannot_work(daemon: Daemon, value: str, reason: str) -> None:
    refused = daemon.ctl("tune", "--max-capacity", value)
    assert refused.returncode == 1
    # A busy engine first says so ("tune accepted; waiting for the engine"); the refusal
    # is the last line.
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("streamd: tune: ") and reason in last
    assert refused.stdout == ""
    status = daemon.status()
    assert status is not None and status["cache"]["max_capacity"] == 256


@pytest.mark.parametrize(
    ("option", "value", "trigger"),
    [("--summary-every-tokens", "50", "tokens"), ("--summary-every-seconds", "0.3", "seconds")],
)
def test_tuned_triggers_write_summaries(
    daemon: Daemon, endpoints: Endpoints, option: str, value: str, trigger: str
) -> None:
    name = option.removeprefix("--").replace("-", "_")
    tuned = daemon.ctl("tune", option, value)
    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout.strip().startswith(f"{name}: 0") and tuned.stdout.strip().endswith(value)
    try:
        seen = {r["seq"] for r in daemon.summaries()}
        send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(10))
        wait_until(
            lambda: any(
                r["trigger"] == trigger and r["seq"] not in seen for r in daemon.summaries()
            ),
            f"a summary triggered by {trigger}",
        )
    finally:
        assert daemon.ctl("tune", option, "0").returncode == 0


# --- metrics -----------------------------------------------------------------------------


def test_prometheus_endpoint_counts_by_source(daemon: Daemon, endpoints: Endpoints) -> None:
    send(daemon, "--push", "--connect", endpoints.pull, lines=sample_log_lines(2))
    url = f"http://127.0.0.1:{endpoints.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert 'streamd_ingest_messages_total{source="zmq-pull"}' in text
    assert "streamd_ingest_tokens_total" in text and "streamd_kv_cache_usage_perc" in text
