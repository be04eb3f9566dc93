"""The soak's broker launcher: a restart keeps what QoS 1 promised an offline subscriber."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from streamd.daemon.tools.soak.broker import start_soak_broker
from streamd.daemon.tools.testing import Broker

pytestmark = pytest.mark.network

WAIT_S = 10.0


class Subscriber:
    """A persistent-session QoS 1 subscriber (as the daemon is) that collects payloads."""

    def __init__(self, broker: Broker) -> None:
        self.got: list[bytes] = []
        self.subscribed, self.arrived = threading.Event(), threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="soak-test-sub", clean_session=False
        )
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_message(self, _client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        self.got.append(message.payload)
        self.arrived.set()

    def subscribe(self) -> None:
        self.client.subscribe("soak/#", qos=1)
        assert self.subscribed.wait(WAIT_S)

    def leave(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publish(broker: Broker, payload: bytes) -> None:
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id="soak-test-pub")
    publisher.connect(broker.host, broker.port)
    publisher.loop_start()
    try:
        publisher.publish("soak/0", payload, qos=1).wait_for_publish(WAIT_S)  # acknowledged
    finally:
        publisher.disconnect()
        publisher.loop_stop()


def test_a_message_queued_for_an_offline_subscriber_survives_a_broker_restart(
    tmp_path: Path,
) -> None:
    broker = start_soak_broker(tmp_path)
    try:
        subscriber = Subscriber(broker)
        subscriber.subscribe()
        subscriber.leave()
        publish(broker, b"kept across the restart")

        broker.stop()  # SIGTERM: Mosquitto saves the session and its queued message
        broker.start()  # the same port
        assert broker.starts == 2

        back = Subscriber(broker)  # the same client id: the saved session
        try:
            assert back.arrived.wait(WAIT_S), broker.log_path.read_text()
        finally:
            back.leave()
        assert back.got == [b"kept across the restart"]
    finally:
        broker.stop()
