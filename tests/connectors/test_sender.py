"""`streamd send`: lines to a real PULL socket or broker, and a report of what did not go."""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from connector_testing import Inbox, SlowLink, eventually, running

from streamd.connectors.checks import ConfigError
from streamd.connectors.mqtt_broker import MqttBrokerConfig
from streamd.connectors.mqtt_source import MqttSource, MqttSourceConfig
from streamd.connectors.sender import SendReport, send_lines_mqtt, send_lines_zmq
from tests.daemon.daemon_testing import cli

pytestmark = pytest.mark.network
FREE = "tcp://127.0.0.1:{port}"


def stdin_bytes(text: bytes) -> io.BufferedReader:
    """What `streamd send` reads: sys.stdin.buffer, line by line."""
    return io.BufferedReader(io.BytesIO(text))


def test_zmq_sends_each_line_as_one_message_and_skips_blanks() -> None:
    with zmq.Context() as context, context.socket(zmq.PULL) as pull:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        lines = stdin_bytes(b"first\r\n\n  \nsecond \xff\nthird")
        report = send_lines_zmq(lines, FREE.format(port=port), timeout_s=2.0)
        assert report == SendReport(sent=3, unsent=0, skipped=2)
        received = [pull.recv() for _ in range(3)]
    assert received == [b"first", b"second \xff", b"third"]


def test_zmq_reports_unsent_lines_when_nothing_listens(free_port: int) -> None:
    start = time.monotonic()
    report = send_lines_zmq(["a\n", "b\n", "c\n"], FREE.format(port=free_port), timeout_s=0.3)
    elapsed = time.monotonic() - start
    assert (report.sent, report.unsent, report.ok) == (0, 3, False)
    assert report.reason is not None and f":{free_port} took the line" in report.reason
    # One timeout, not one per line: after the first, lines are tried without waiting.
    assert elapsed < 0.3 * 2 + 0.5, elapsed
    assert "3 not sent" in report.describe()


def test_zmq_counts_a_too_large_line_and_sends_the_rest() -> None:
    with zmq.Context() as context, context.socket(zmq.PULL) as pull:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        lines = [b"x" * 101, b"ok"]
        report = send_lines_zmq(lines, FREE.format(port=port), timeout_s=2.0, max_message_bytes=100)
        assert pull.recv() == b"ok"
    assert (report.sent, report.unsent) == (1, 1)
    assert report.reason == "a line of 101 bytes > max 100"


def test_str_lines_with_undecodable_stdin_bytes_go_out_as_they_came() -> None:
    with zmq.Context() as context, context.socket(zmq.PULL) as pull:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        raw = b"caf\xe9 \xc3\xa9"  # latin-1 byte, then UTF-8 é
        lines = [raw.decode("utf-8", errors="surrogateescape"), "lone \ud800 surrogate"]
        report = send_lines_zmq(lines, FREE.format(port=port), timeout_s=2.0)
        assert [pull.recv(), pull.recv()] == [raw, b"lone ? surrogate"]
    assert report.ok


async def test_mqtt_publishes_each_line_with_qos1(mosquitto: Any) -> None:
    broker = MqttBrokerConfig(host=mosquitto.host, port=mosquitto.port, timeout_s=2.0)
    inbox = Inbox()
    source = MqttSource(MqttSourceConfig(broker=broker, topics=("in/logs",)))
    async with source, running(source.run(inbox)):
        await eventually(lambda: source.connected, "the daemon side to subscribe")
        lines = stdin_bytes(b"one\ntwo\n\nthree\n")
        report = await asyncio.to_thread(send_lines_mqtt, lines, broker, "in/logs", 2.0)
        assert report == SendReport(sent=3, unsent=0, skipped=1)
        assert await inbox.wait_for(3) == [b"one", b"two", b"three"]


def test_mqtt_reports_unsent_lines_when_no_broker(free_port: int) -> None:
    broker = MqttBrokerConfig(port=free_port)
    report = send_lines_mqtt(["a", "b"], broker, "in/logs", timeout_s=0.3)
    assert (report.sent, report.unsent) == (0, 2)
    assert report.reason == f"not connected to the MQTT broker at 127.0.0.1:{free_port}"


def test_bad_arguments_are_refused_before_sending() -> None:
    with pytest.raises(ConfigError, match="send address = 'localhost:5555'"):
        send_lines_zmq(["a"], "localhost:5555")
    with pytest.raises(ConfigError, match="send topic = 'in/#'"):
        send_lines_mqtt(["a"], MqttBrokerConfig(), "in/#")
    with pytest.raises(ConfigError, match="send timeout_s = 0"):
        send_lines_zmq(["a"], timeout_s=0)
    with pytest.raises(ConfigError, match="send qos = 5"):
        send_lines_mqtt(["a"], MqttBrokerConfig(), "in/logs", qos=5)


async def test_mqtt_keeps_publishes_in_flight_not_one_round_trip_per_line(
    mosquitto_factory: Any,
) -> None:
    mosquitto = mosquitto_factory("max_inflight_messages 100\n")  # its Receive Maximum
    broker = MqttBrokerConfig(host=mosquitto.host, port=mosquitto.port, timeout_s=5.0)
    inbox = Inbox()
    source = MqttSource(MqttSourceConfig(broker=broker, topics=("in/logs",)))
    lines = [f"line {n}".encode() for n in range(300)]  # three times MAX_IN_FLIGHT
    async with source, running(source.run(inbox)), SlowLink(broker.host, broker.port, 0.05) as link:
        await eventually(lambda: source.connected, "the daemon side to subscribe")
        far = MqttBrokerConfig(host=link.host, port=link.port, client_id="far", timeout_s=5.0)
        start = time.monotonic()
        report = await asyncio.to_thread(send_lines_mqtt, lines, far, "in/logs", 5.0)
        elapsed = time.monotonic() - start
        assert report == SendReport(sent=300, unsent=0, skipped=0)
        assert await inbox.wait_for(300) == lines  # all, once each, in order
    # A 0.1 s round trip per line would take 30 s.
    assert elapsed < 3.0, elapsed


async def test_mqtt_counts_each_unacknowledged_line_unsent_after_about_one_timeout(
    mosquitto: Any,
) -> None:
    async with SlowLink(mosquitto.host, mosquitto.port) as link:

        def lines() -> Iterator[bytes]:
            # Connected (the CONNACK came through), then the link goes quiet.
            while link.bytes_to_client == 0:
                time.sleep(0.01)
            link.silent = True
            yield from (b"a", b"", b"b", b"c" * 200, b"d", b"e", b"f", b"g", b"h", b"i")

        broker = MqttBrokerConfig(host=link.host, port=link.port)
        start = time.monotonic()
        report = await asyncio.to_thread(
            send_lines_mqtt, lines(), broker, "in/logs", 0.5, max_message_bytes=100
        )
        elapsed = time.monotonic() - start
    # The 200-byte line is refused first, while "a" still awaits its acknowledgement:
    # the reason is the earliest line's by line order, not by which failed first.
    assert report == SendReport(
        sent=0, unsent=9, skipped=1, reason="the broker did not acknowledge within 0.5s"
    )
    assert elapsed < 0.5 * 2 + 1.0, elapsed  # not 0.5 s per line


async def test_mqtt_keeps_no_more_in_flight_than_the_broker_allows(mosquitto_factory: Any) -> None:
    # Mosquitto tells clients on connecting (Receive Maximum) to keep at most
    # this many publishes unanswered; MQTT v5 lets a broker disconnect one that doesn't.
    server = mosquitto_factory("max_inflight_messages 5\n")
    lines = [f"line {n}" for n in range(50)]
    async with SlowLink(server.host, server.port, 0.05) as link:
        broker = MqttBrokerConfig(host=link.host, port=link.port)
        start = time.monotonic()
        report = await asyncio.to_thread(send_lines_mqtt, lines, broker, "in/logs", 5.0)
        elapsed = time.monotonic() - start
    assert report == SendReport(sent=50, unsent=0, skipped=0)
    # 5 at a time over a 0.1 s round trip take 10 round trips at least; 100 at a time, one.
    assert elapsed >= 0.9, elapsed


def test_mqtt_counts_lines_the_broker_refuses_as_unsent(
    mosquitto_factory: Any, tmp_path: Path
) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite in/allowed\n")  # for anonymous clients: only this topic
    server = mosquitto_factory(f"acl_file {acl}\n")
    broker = MqttBrokerConfig(host=server.host, port=server.port)
    report = send_lines_mqtt(["a", "b"], broker, "in/secret", timeout_s=2.0)
    assert report == SendReport(
        sent=0, unsent=2, skipped=0, reason="the broker refused it: Not authorized"
    )
    assert send_lines_mqtt(["a"], broker, "in/allowed", timeout_s=2.0).ok


def test_streamd_send_names_a_bad_tls_file_in_one_line_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    mqtt = ["--mqtt-host", "127.0.0.1", "--mqtt-topic", "in/logs", "--mqtt-tls-ca", str(bad)]
    result = cli("send", *mqtt, stdin=b"a\n")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    expected = f"streamd: --mqtt-tls-ca = '{bad}': cannot be loaded (.+); it must be a readable PEM"
    assert re.match(re.escape(expected).replace(re.escape("(.+)"), r"\(.+\)"), line), line


def test_streamd_send_names_an_address_it_cannot_connect_to_and_exits_2() -> None:
    result = cli("send", "--push", "--connect", "tcp://gpu01", stdin=b"a\n")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "streamd: send address = 'tcp://gpu01': cannot connect (Invalid argument); "
        "give e.g. tcp://127.0.0.1:5555 or ipc:///run/streamd/in.sock"
    ]
