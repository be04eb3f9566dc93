"""The MQTT side of `streamd send`: with QoS 1 or 2, up to max_in_flight publishes
await their acknowledgement at once instead of one round trip per line; each line
is still counted once, sent (acknowledged) or unsent (why not), in line order."""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from .mqtt_broker import MqttBrokerConfig, tls_context
from .send_channel import Outcome, Patience


@dataclass(frozen=True)
class _Line:
    """A line handed to the MQTT publisher, awaiting its outcome."""

    mid: int | None  # paho's message id; None when it was not published
    deadline: float  # time.monotonic() by which the broker must have answered
    refused: str | None = None  # why it was not published


class MqttPublisher:
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
        self._patience = Patience(timeout_s)
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
