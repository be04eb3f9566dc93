"""The logic of `streamd send`: each input line becomes one message to the daemon.

    report = send_lines_zmq(sys.stdin.buffer, "tcp://127.0.0.1:5555", timeout_s=5.0)
    if not report.ok:
        print(report.describe(), file=sys.stderr)

Both functions are synchronous, read their input to the end (EOF) and return
a SendReport; they raise only ConfigError, for arguments that cannot work.
Lines may be `bytes` (best: the daemon's decoder deals with bad UTF-8) or
`str`; trailing CR/LF is removed; blank lines are skipped, not sent (the
daemon would reject them as empty).

Waiting, when the receiver is not there: a line waits up to `timeout_s` for
the daemon (or broker) to take it. Once one has timed out the receiver is
taken to be gone, and the next lines are only tried without waiting, and
counted unsent, until one goes through again. So a file sent to no daemon
ends after about one timeout, not one per line, and `journalctl -f | streamd
send` resumes by itself when the daemon is back.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from .checks import check_positive, check_zmq_address, require
from .messages import MIB
from .mqtt_broker import MqttBrokerConfig, check_topic_name, tls_context
from .zmq_sources import DEFAULT_PULL_BIND

DEFAULT_SEND_TIMEOUT_S = 5.0

# Sends one payload, waiting at most the given seconds for the receiver;
# returns None once sent, else why not (one line of words).
TrySend = Callable[[bytes, float], str | None]


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
) -> SendReport:
    """Send each line as one message on a ZeroMQ PUSH socket connected to `address`.

    At the end, messages still queued get up to `timeout_s` to leave
    (linger); a receiver that vanishes in that moment loses them unseen.
    """
    check_zmq_address("send address", address)
    check_positive("send timeout_s", timeout_s)
    with zmq.Context() as context:  # our own: term() on exit waits out the linger
        push = _ZmqPush(context, address, timeout_s)
        try:
            return _send_each(lines, push.try_send, timeout_s, max_message_bytes)
        finally:
            push.close()


def send_lines_mqtt(
    lines: Iterable[str | bytes],
    broker: MqttBrokerConfig,
    topic: str,
    timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    qos: int = 1,
    max_message_bytes: int = MIB,
) -> SendReport:
    """Publish each line as one message to `topic`; with QoS 1, sent = acknowledged by the broker.

    The client id is the broker config's + "-send-<pid>", never the daemon's
    own (the broker would disconnect the daemon to let the sender in).
    """
    check_topic_name("send topic", topic)
    check_positive("send timeout_s", timeout_s)
    require(qos in (0, 1, 2), f"send qos = {qos!r}: use 0, 1 or 2 (1: acknowledged)")
    publisher = _MqttPublisher(broker, topic, qos, timeout_s)
    try:
        return _send_each(lines, publisher.try_send, timeout_s, max_message_bytes)
    finally:
        publisher.close()


def _send_each(
    lines: Iterable[str | bytes], try_send: TrySend, timeout_s: float, max_message_bytes: int
) -> SendReport:
    sent = unsent = skipped = 0
    reason: str | None = None
    wait_s = timeout_s
    for line in lines:
        payload = _payload(line)
        if not payload.strip():
            skipped += 1
            continue
        if len(payload) > max_message_bytes:
            # The daemon would refuse it, and a ZeroMQ receiver would even drop
            # our connection (ZMQ_MAXMSGSIZE) and the lines queued behind it.
            error: str | None = f"a line of {len(payload)} bytes > max {max_message_bytes}"
        else:
            error = try_send(payload, wait_s)
            # After a failure the receiver is taken to be gone: lines are tried
            # without waiting until one goes through again (module docstring).
            wait_s = timeout_s if error is None else 0.0
        if error is None:
            sent += 1
        else:
            unsent += 1
            reason = reason or error
    return SendReport(sent, unsent, skipped, reason)


def _payload(line: str | bytes) -> bytes:
    if isinstance(line, bytes):
        return line.rstrip(b"\r\n")
    try:
        # Bytes that stdin could not decode (surrogateescape) go out as they came.
        data = line.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        data = line.encode("utf-8", errors="replace")
    return data.rstrip(b"\r\n")


class _ZmqPush:
    def __init__(self, context: zmq.Context[Any], address: str, timeout_s: float) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.socket = context.socket(zmq.PUSH)
        # IMMEDIATE: queue only to a connected receiver, so "nobody there" shows
        # up as a send that cannot proceed instead of lines queued into the void.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, math.ceil(timeout_s * 1000))
        self.socket.connect(address)

    def try_send(self, payload: bytes, wait_s: float) -> str | None:
        if self.socket.poll(math.ceil(wait_s * 1000), zmq.POLLOUT):
            try:
                self.socket.send(payload, zmq.NOBLOCK)
                return None
            except zmq.Again:
                pass  # the receiver went between poll and send
        return f"no receiver at {self.address} took the line within {self.timeout_s}s"

    def close(self) -> None:
        self.socket.close()  # linger: up to timeout_s for queued lines to leave


class _MqttPublisher:
    """A paho client on its own network thread, which also reconnects by itself."""

    def __init__(self, broker: MqttBrokerConfig, topic: str, qos: int, timeout_s: float) -> None:
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.timeout_s = timeout_s
        self._connected = threading.Event()
        self._refusal: str | None = None  # the broker's reason, when it refused us
        self.client = self._make_client()
        self.client.connect_async(broker.host, broker.port, broker.keepalive_s)
        self.client.loop_start()

    def _make_client(self) -> paho.Client:
        broker = self.broker
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{broker.client_id}-send-{os.getpid()}",
            protocol=paho.MQTTv5,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        tls = tls_context(broker)
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(
            min_delay=math.ceil(broker.backoff_min_s), max_delay=math.ceil(broker.backoff_max_s)
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        return client

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        else:
            self._refusal = None
            self._connected.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()

    def try_send(self, payload: bytes, wait_s: float) -> str | None:
        if not self._connected.wait(wait_s):
            where = f"{self.broker.host}:{self.broker.port}"
            refused = f" (refused: {self._refusal})" if self._refusal else ""
            return f"not connected to the MQTT broker at {where}{refused}"
        info = self.client.publish(self.topic, payload, qos=self.qos)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            return f"publish failed: {exc}"
        if not info.is_published():
            return f"the broker did not acknowledge within {self.timeout_s}s"
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
