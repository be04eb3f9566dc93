"""The logic of `streamd send`: each input line becomes one message to the daemon.

send_lines_zmq and send_lines_mqtt are synchronous, read their lines to the end (EOF)
and return a SendReport; they raise only ConfigError, for arguments that cannot work.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import zmq

from .checks import check_positive, check_zmq_address, require
from .messages import MIB
from .mqtt_broker import MqttBrokerConfig, check_topic_name
from .send_acked import ZmqAcked
from .send_channel import Channel, Outcome
from .send_mqtt import MqttPublisher
from .send_zmq import ZmqPush
from .zmq_security import CurveClientKeys
from .zmq_sources import DEFAULT_PULL_BIND

DEFAULT_SEND_TIMEOUT_S = 5.0
# Unacknowledged MQTT publishes at once, at most. One at a time costs a round
# trip per line (100 lines a second over a 10 ms link); 100 hides it, while a
# broker that stops answering leaves at most 100 lines waiting out the timeout.
# A broker may allow fewer (its Receive Maximum; Mosquitto's default is 20).
MAX_IN_FLIGHT = 100


@dataclass(frozen=True)
class SendReport:
    sent: int
    unsent: int  # not taken by the receiver in time (or too large)
    skipped: int  # blank lines, not sent
    reason: str | None = None  # why the first unsent line was not sent

    @property
    def ok(self) -> bool:
        return self.unsent == 0

    def describe(self) -> str:
        text = f"sent {self.sent} lines, {self.unsent} not sent, {self.skipped} blank skipped"
        return text if self.reason is None else f"{text}; first failure: {self.reason}"


def send_lines_zmq(
    lines: Iterable[str | bytes],
    address: str = DEFAULT_PULL_BIND,
    timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_message_bytes: int = MIB,
    curve: CurveClientKeys | None = None,
) -> SendReport:
    """Send each line as one message on a ZeroMQ PUSH socket connected to `address`.

    With `curve`, the connection is a CURVE client's: encrypted, and taken
    only by a receiver that holds the server key's pair and lets our key in.
    At the end, messages still queued get up to `timeout_s` to leave
    (linger); a receiver that vanishes in that moment loses them unseen.
    """
    check_zmq_address("send address", address)
    check_positive("send timeout_s", timeout_s)
    with zmq.Context() as context:  # our own: term() on exit waits out the linger
        push = ZmqPush(context, address, timeout_s, curve)
        try:
            return _send_each(lines, push, max_message_bytes)
        finally:
            push.close()


def send_lines_acked(
    lines: Iterable[str | bytes],
    address: str,
    timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_message_bytes: int = MIB,
    curve: CurveClientKeys | None = None,
) -> SendReport:
    """Send each line to the daemon's acked ROUTER socket (its --zmq-acked-bind) at
    `address`; sent = acknowledged, i.e. spooled by the daemon (connectors/send_acked.py).

    Lines are resent until acknowledged, across a daemon restart; those still
    unacknowledged after `timeout_s` without any acknowledgement are reported unsent.
    """
    check_zmq_address("send address", address)
    check_positive("send timeout_s", timeout_s)
    with zmq.Context() as context:
        channel = ZmqAcked(context, address, timeout_s, curve)
        try:
            return _send_each(lines, channel, max_message_bytes)
        finally:
            channel.close()


def send_lines_mqtt(
    lines: Iterable[str | bytes],
    broker: MqttBrokerConfig,
    topic: str,
    timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    qos: int = 1,
    max_message_bytes: int = MIB,
    max_in_flight: int = MAX_IN_FLIGHT,
) -> SendReport:
    """Publish each line as one message to `topic`; with QoS 1, sent = acknowledged by the broker.

    Up to `max_in_flight` publishes await their acknowledgement at once, each
    for at most `timeout_s`; a negative acknowledgement (e.g. not authorized
    for the topic) counts the line unsent, with the broker's reason.

    The client id is the broker config's + "-send-<pid>", never the daemon's
    own (the broker would disconnect the daemon to let the sender in).
    """
    check_topic_name("send topic", topic)
    check_positive("send timeout_s", timeout_s)
    require(qos in (0, 1, 2), f"send qos = {qos!r}: use 0, 1 or 2 (1: acknowledged)")
    check_positive("send max_in_flight", max_in_flight)
    publisher = MqttPublisher(broker, topic, qos, timeout_s, max_in_flight)
    try:
        return _send_each(lines, publisher, max_message_bytes)
    finally:
        publisher.close()


class _Tally:
    """Counts outcomes, given in line order."""

    def __init__(self) -> None:
        self.sent = self.unsent = self.skipped = 0
        self.reason: str | None = None  # why the first unsent line was not sent

    def count(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome is None:
                self.sent += 1
            else:
                self.unsent += 1
                self.reason = self.reason or outcome

    def report(self) -> SendReport:
        return SendReport(self.sent, self.unsent, self.skipped, self.reason)


def _send_each(
    lines: Iterable[str | bytes], channel: Channel, max_message_bytes: int
) -> SendReport:
    """Lines may be `bytes` (best: the daemon's decoder deals with bad UTF-8) or `str`;
    trailing CR/LF is removed; blank lines are skipped, not sent (the daemon would
    reject them as empty)."""
    tally = _Tally()
    for line in lines:
        payload = _payload(line)
        if not payload.strip():
            tally.skipped += 1
        elif len(payload) > max_message_bytes:
            # The daemon would refuse it, and a ZeroMQ receiver would even drop
            # our connection (ZMQ_MAXMSGSIZE) and the lines queued behind it.
            tally.count(channel.refuse(f"a line of {len(payload)} bytes > max {max_message_bytes}"))
        else:
            tally.count(channel.submit(payload))
    tally.count(channel.settle_all())  # the lines still awaiting an acknowledgement
    return tally.report()


def _payload(line: str | bytes) -> bytes:
    if isinstance(line, bytes):
        return line.rstrip(b"\r\n")
    try:
        # Bytes that stdin could not decode (surrogateescape) go out as they came.
        data = line.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        data = line.encode("utf-8", errors="replace")
    return data.rstrip(b"\r\n")
