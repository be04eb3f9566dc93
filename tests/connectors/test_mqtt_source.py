"""The MQTT source against a real Mosquitto: QoS 1, persistent session, reconnects."""

from __future__ import annotations

from typing import Any

import aiomqtt
import pytest
from connector_testing import Inbox, eventually, running

from streamd.connectors.mqtt_broker import Backoff, MqttBrokerConfig
from streamd.connectors.mqtt_source import MqttSource, MqttSourceConfig

FAST_RETRY = {"backoff_min_s": 0.05, "backoff_max_s": 0.2, "timeout_s": 2.0}


def source_config(broker: Any, client_id: str = "streamd-test", **kwargs: Any) -> MqttSourceConfig:
    """`broker` is the `mosquitto` fixture (tests/conftest.py)."""
    settings = MqttBrokerConfig(
        host=broker.host, port=broker.port, client_id=client_id, **FAST_RETRY
    )
    return MqttSourceConfig(broker=settings, topics=("logs/#",), **kwargs)


async def publish(broker: Any, *messages: tuple[str, bytes], retain: bool = False) -> None:
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-publisher") as client:
        for topic, payload in messages:
            await client.publish(topic, payload, qos=1, retain=retain)


@pytest.mark.network
async def test_receives_qos1_messages_with_topic(mosquitto: Any) -> None:
    inbox = Inbox()
    async with MqttSource(source_config(mosquitto)) as source, running(source.run(inbox)):
        await eventually(lambda: source.connected, "the source to subscribe")
        await publish(
            mosquitto, ("logs/app", b"one"), ("other/x", b"not ours"), ("logs/db", b"two")
        )
        await inbox.wait_for(2)
    assert [(m.source, m.topic, m.payload) for m in inbox.messages] == [
        ("mqtt", "logs/app", b"one"),
        ("mqtt", "logs/db", b"two"),
    ]


@pytest.mark.network
async def test_messages_published_while_away_arrive_on_return(mosquitto: Any) -> None:
    inbox = Inbox()
    config = source_config(mosquitto, client_id="persistent")
    async with MqttSource(config) as source, running(source.run(inbox)):
        await eventually(lambda: source.connected, "the first subscription")
        await publish(mosquitto, ("logs/a", b"before"))
        await inbox.wait_for(1)
    # The daemon is away (disconnected cleanly); its session lives on in the broker.
    await publish(mosquitto, ("logs/a", b"while away 1"), ("logs/b", b"while away 2"))
    async with MqttSource(config) as source, running(source.run(inbox)):
        payloads = await inbox.wait_for(3)
    assert payloads == [b"before", b"while away 1", b"while away 2"]


@pytest.mark.network
async def test_reconnects_after_the_broker_restarts(mosquitto: Any) -> None:
    inbox = Inbox()
    async with MqttSource(source_config(mosquitto)) as source, running(source.run(inbox)):
        await eventually(lambda: source.connected, "the first subscription")
        mosquitto.stop()
        await eventually(lambda: not source.connected, "the source to notice")
        mosquitto.start()  # same port; persistence false, so the session is gone too
        await eventually(lambda: source.connected, "the source to reconnect")
        await publish(mosquitto, ("logs/x", b"after restart"))
        assert await inbox.wait_for(1) == [b"after restart"]
    assert source.link.connection_errors >= 1


@pytest.mark.network
async def test_retained_message_is_ingested_once_not_per_reconnect(mosquitto: Any) -> None:
    await publish(mosquitto, ("logs/state", b"retained"), retain=True)
    inbox = Inbox()
    config = source_config(mosquitto, client_id="retain-once")
    for markers in (1, 2):
        async with MqttSource(config) as source, running(source.run(inbox)):
            await eventually(lambda: source.connected, "a subscription")
            await publish(mosquitto, ("logs/state", b"marker"))
            await eventually(
                lambda: inbox.payloads.count(b"marker") == markers,  # noqa: B023
                f"marker {markers}",
            )
    assert inbox.payloads == [b"retained", b"marker", b"marker"]


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    for _ in range(5000):  # a broker away for days must not overflow the arithmetic
        backoff.next_delay()
    assert backoff.next_delay() == 3.0
