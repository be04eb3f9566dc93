"""`streamd send`: lines to a real PULL socket or broker, and a report of what did not go."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

import pytest
import zmq
from connector_testing import Inbox, eventually, running

from streamd.connectors.checks import ConfigError
from streamd.connectors.mqtt_broker import MqttBrokerConfig
from streamd.connectors.mqtt_source import MqttSource, MqttSourceConfig
from streamd.connectors.sender import SendReport, send_lines_mqtt, send_lines_zmq

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
