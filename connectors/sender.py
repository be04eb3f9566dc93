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

MQTT with QoS 1 or 2 keeps up to MAX_IN_FLIGHT publishes unacknowledged at
once instead of waiting out one round trip per line; each line is still
counted exactly once, sent (the broker acknowledged it) or unsent (why not),
and the first failure named is that of the earliest unsent line.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as paho
import zmq
from paho.mqtt.enums import CallbackAPIVersion
from zmq.utils.monitor import recv_monitor_message

from .checks import ConfigError, check_positive, check_zmq_address, require
from .messages import MIB
from .mqtt_broker import MqttBrokerConfig, check_topic_name, tls_context
from .zmq_security import CurveClientKeys, make_curve_client
from .zmq_sources import DEFAULT_PULL_BIND

DEFAULT_SEND_TIMEOUT_S = 5.0
# Unacknowledged MQTT publishes at once, at most. One at a time costs a round
# trip per line (100 lines a second over a 10 ms link); 100 hides it, while a
# broker that stops answering leaves at most 100 lines waiting out the timeout.
# A broker may allow fewer (its Receive Maximum; Mosquitto's default is 20).
MAX_IN_FLIGHT = 100

# The outcome of one line: None once sent, else why not (one line of words).
Outcome = str | None


class _Channel(Protocol):
    """Where lines go. Each method returns the outcomes settled by then, in line order."""

    def submit(self, payload: bytes) -> list[Outcome]:
        """Hands a line to the receiver (waiting for it as `_Patience` allows)."""

    def refuse(self, reason: str) -> list[Outcome]:
        """A line not sent, for `reason`: its outcome comes in its place in line order."""

    def settle_all(self) -> list[Outcome]:
        """Waits for the outcomes of all the lines still awaiting one."""


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
        push = _ZmqPush(context, address, timeout_s, curve)
        try:
            return _send_each(lines, push, max_message_bytes)
        finally:
            push.close()


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
    publisher = _MqttPublisher(broker, topic, qos, timeout_s, max_in_flight)
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


class _Patience:
    """How long a line may wait for the receiver to be there: `timeout_s`, or
    nothing once one has timed out, until one goes through again (module docstring)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.wait_s = timeout_s

    def saw(self, there: bool) -> None:
        """Note whether the receiver took (or answered) a line in time."""
        self.wait_s = self.timeout_s if there else 0.0


def _send_each(
    lines: Iterable[str | bytes], channel: _Channel, max_message_bytes: int
) -> SendReport:
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


class _ZmqPush:
    """Sent = queued to a connected receiver: there is no acknowledgement to wait for."""

    def __init__(
        self,
        context: zmq.Context[Any],
        address: str,
        timeout_s: float,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._patience = _Patience(timeout_s)
        self.socket = context.socket(zmq.PUSH)
        # IMMEDIATE: queue only to a connected receiver, so "nobody there" shows
        # up as a send that cannot proceed instead of lines queued into the void.
        # A connection counts once its handshake succeeds: a receiver that
        # refuses our CURVE key (or wants one) takes nothing.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, math.ceil(timeout_s * 1000))
        if curve is not None:
            make_curve_client(self.socket, curve)
        self._handshakes = _HandshakeWatch(self.socket, curve is not None)
        try:
            self.socket.connect(address)
        except zmq.ZMQError as error:  # e.g. tcp://host without a port: nothing to try
            self._handshakes.close()
            self.socket.close(linger=0)
            why = zmq.strerror(error.errno) if error.errno else str(error)
            raise ConfigError(
                f"send address = {address!r}: cannot connect ({why}); "
                "give e.g. tcp://127.0.0.1:5555 or ipc:///run/streamd/in.sock"
            ) from None

    def submit(self, payload: bytes) -> list[Outcome]:
        outcome = self._send(payload)
        self._patience.saw(outcome is None)
        return [outcome]

    def _send(self, payload: bytes) -> Outcome:
        if self.socket.poll(math.ceil(self._patience.wait_s * 1000), zmq.POLLOUT):
            try:
                self.socket.send(payload, zmq.NOBLOCK)
                return None
            except zmq.Again:
                pass  # the receiver went between poll and send
        why = f"no receiver at {self.address} took the line within {self.timeout_s}s"
        refusal = self._handshakes.last_failure()
        return why if refusal is None else f"{why}: {refusal}"

    def refuse(self, reason: str) -> list[Outcome]:
        return [reason]

    def settle_all(self) -> list[Outcome]:
        return []

    def close(self) -> None:
        self._handshakes.close()
        self.socket.close()  # linger: up to timeout_s for queued lines to leave


class _HandshakeWatch:
    """Why the receiver would not take our lines, from the socket's monitor events: it
    refused our CURVE key, wants CURVE (or does not speak it), or the handshake failed."""

    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    # The options that `streamd send` takes for CURVE, named in the advice below.
    KEY_OPTIONS = "--curve-secret-key, --curve-server-key"

    def __init__(self, socket: zmq.Socket[Any], curve: bool) -> None:
        self._socket = socket
        self._curve = curve
        # A connection torn mid-handshake (the receiver hung up first) says no more.
        self._generic = (
            "the handshake failed; is --curve-server-key the receiver's public key?"
            if curve
            else "the handshake failed; if the receiver requires CURVE, give our key pair "
            f"and its public key ({self.KEY_OPTIONS})"
        )
        self._monitor: zmq.Socket[Any] | None = socket.get_monitor_socket(self.EVENTS)
        self._failure: str | None = None

    def last_failure(self) -> str | None:
        """Why handshakes fail, in words; None if none failed since one succeeded."""
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._failure = None
                continue
            why = self._describe(event["event"], event["value"])
            # Of the retries, one torn mid-handshake says less than a refusal: keep that.
            if why != self._generic or self._failure is None:
                self._failure = why
        return self._failure

    def _describe(self, event: int, value: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = f"it refused our CURVE key (ZAP status {value})"
            return f"{why}: add our public key to its authorized keys"
        if (
            event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            if self._curve:
                return "it does not use CURVE: send without CURVE keys"
            return f"it requires CURVE: give our key pair and its public key ({self.KEY_OPTIONS})"
        return self._generic

    def close(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None


@dataclass(frozen=True)
class _Line:
    """A line handed to the MQTT publisher, awaiting its outcome."""

    mid: int | None  # paho's message id; None when it was not published
    deadline: float  # time.monotonic() by which the broker must have answered
    refused: str | None = None  # why it was not published


class _MqttPublisher:
    """A paho client on its own network thread, which also reconnects by itself.

    Lines are settled in line order: the oldest leaves `_lines` once the broker
    has answered it, or once its `timeout_s` is up. paho resends
    unacknowledged publishes after a reconnect, so an answer may still come
    within that time after the link dropped. An answer that comes later is
    ignored: the line stays counted unsent, though the broker may have it.
    """

    def __init__(
        self, broker: MqttBrokerConfig, topic: str, qos: int, timeout_s: float, max_in_flight: int
    ) -> None:
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        # Lines awaiting their outcome, at most: max_in_flight, or fewer if the
        # broker says so on connecting (MQTT v5 forbids sending it more).
        self._window = max_in_flight
        self._patience = _Patience(timeout_s)
        self._connected = threading.Event()
        self._refusal: str | None = None  # the broker's reason, when it refused us
        self._lines: deque[_Line] = deque()  # not settled yet, oldest first
        # Filled by paho's thread: the broker's answer per message id, until settled.
        self._answered = threading.Condition()
        self._answers: dict[int, paho.ReasonCode] = {}
        # Ids that timed out: an answer that comes after is not for a later
        # publish reusing the id (paho reuses one only after that answer).
        self._given_up: set[int] = set()
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
        client.max_inflight_messages_set(self.max_in_flight)  # else paho's 20 caps ours
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            self._refusal = str(reason)
        else:
            self._refusal = None
            # paho does not keep to the broker's Receive Maximum by itself; 65535 if unsaid.
            receive_maximum = getattr(props, "ReceiveMaximum", 65535)
            self._window = min(self.max_in_flight, receive_maximum)
            self._connected.set()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self._connected.clear()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: paho.ReasonCode, props: Any
    ) -> None:
        with self._answered:
            if mid in self._given_up:
                self._given_up.discard(mid)
                return
            self._answers[mid] = reason
            self._answered.notify_all()

    def submit(self, payload: bytes) -> list[Outcome]:
        if not self._connected.wait(self._patience.wait_s):
            where = f"{self.broker.host}:{self.broker.port}"
            refused = f" (refused: {self._refusal})" if self._refusal else ""
            outcomes = self.refuse(f"not connected to the MQTT broker at {where}{refused}")
            self._patience.saw(False)  # after refuse(): what it settles came in earlier
            return outcomes
        info = self.client.publish(self.topic, payload, qos=self.qos)
        # Not connected any more: paho keeps a QoS 1/2 publish and sends it on
        # reconnecting, so it is in flight like the others; QoS 0 it drops.
        kept = (paho.MQTT_ERR_SUCCESS,) + ((paho.MQTT_ERR_NO_CONN,) if self.qos else ())
        if info.rc not in kept:
            return self.refuse(f"publish failed: {paho.error_string(info.rc)}")
        self._lines.append(_Line(info.mid, time.monotonic() + self.timeout_s))
        return self._settle(keep=self._window - 1)

    def refuse(self, reason: str) -> list[Outcome]:
        self._lines.append(_Line(None, time.monotonic(), reason))
        return self._settle(keep=self._window - 1)

    def settle_all(self) -> list[Outcome]:
        return self._settle(keep=0)

    def _settle(self, keep: int) -> list[Outcome]:
        """Outcomes of the oldest lines: those answered or past their deadline,
        and more, waiting for them, until at most `keep` remain."""
        outcomes = []
        with self._answered:
            while self._lines:
                line = self._lines[0]
                if line.mid is None:
                    outcomes.append(line.refused)
                elif len(self._lines) > keep:
                    outcomes.append(self._outcome(line.mid, self._wait_for_answer(line)))
                elif line.mid in self._answers or time.monotonic() >= line.deadline:
                    outcomes.append(self._outcome(line.mid, line.mid in self._answers))
                else:
                    break
                self._lines.popleft()
        return outcomes

    def _wait_for_answer(self, line: _Line) -> bool:
        return self._answered.wait_for(
            lambda: line.mid in self._answers, line.deadline - time.monotonic()
        )

    def _outcome(self, mid: int, answered: bool) -> Outcome:
        self._patience.saw(answered)
        if not answered:
            self._given_up.add(mid)
            return f"the broker did not acknowledge within {self.timeout_s}s"
        reason = self._answers.pop(mid)
        return f"the broker refused it: {reason}" if reason.is_failure else None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
