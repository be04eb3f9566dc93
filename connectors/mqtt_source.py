"""MQTT source: subscribe (MQTT v5, QoS 1, persistent session) and reconnect forever.

`async with MqttSource(config) as source: await source.run(deliver)` runs until cancelled.
The broker keeps the session and queues messages while the daemon is away; the reconnect
loop is `MqttLink` (mqtt_broker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from .checks import check_positive, require
from .lifecycle import OpenClose
from .messages import Deliver
from .mqtt_broker import (
    MqttBrokerConfig,
    MqttLink,
    acknowledge,
    check_topic_filter,
    tls_context,
)
from .pacing import LoopShare
from .receipts import DurableMessage, Receipt

# With a persistent session (fixed client id, clean_start=False, a session expiry interval)
# the broker keeps our subscriptions and queues QoS 1 messages while the daemon is away
# (restart, network loss). Brokers bound that queue (Mosquitto: max_queued_messages, 1000 by
# default).
# A day: covers a reboot or a long maintenance; after longer the broker may
# drop the queue, and the stream's context would be stale anyway.
DEFAULT_SESSION_EXPIRY_S = 24 * 3600
FLUSH_ACKS_S = 1.0  # at a stop, how long the acknowledgements still due may take


@dataclass(frozen=True)
class MqttSourceConfig:
    broker: MqttBrokerConfig = field(default_factory=MqttBrokerConfig)
    topics: tuple[str, ...] = ("streamd/in/#",)
    qos: int = 1  # at least once: a message survives our disconnects
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    name: str = "mqtt"  # the source name in counters and logs

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", tuple(self.topics))  # lists from config files
        require(
            len(self.topics) > 0, "mqtt topics = []: give at least one topic filter, e.g. logs/#"
        )
        for topic in self.topics:
            check_topic_filter("mqtt topics", topic)
        require(self.qos in (0, 1, 2), f"mqtt qos = {self.qos!r}: use 0, 1 or 2 (1 is the default)")
        check_positive("mqtt session_expiry_s", self.session_expiry_s)
        require(bool(self.name.strip()), f"mqtt source name = {self.name!r}: give a short name")


class MqttSource(OpenClose):
    """open()/close() do nothing: run() connects, and disconnects when cancelled."""

    def __init__(self, config: MqttSourceConfig) -> None:
        self.config = config
        self.name = config.name
        broker = config.broker
        # TLS files are read now, so that a bad certificate stops the daemon at start
        # (tls_context raises ConfigError naming the setting and the file).
        self.link = MqttLink(
            broker,
            broker.client_id,
            label=f"mqtt source {config.name}",
            session_expiry_s=config.session_expiry_s,
            tls=tls_context(broker),
            manual_ack=True,  # a PUBACK once the daemon holds the message: see _receive
            # A new client per connection: messages the old one held unacknowledged come
            # again from the broker, and an old packet id acknowledged on the new connection
            # could name another message by then.
            reuse_client=False,
        )

    @property
    def connected(self) -> bool:
        """Connected and subscribed."""
        return self.link.connected

    async def run(self, deliver: Deliver) -> None:
        """Receive and deliver messages until cancelled, reconnecting whenever the link fails."""

        async def receive(client: aiomqtt.Client) -> None:
            await self._receive(client, deliver)

        await self.link.run(receive, prepare=self._subscribe)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        # Subscribed again on every connect. Retain handling 1: a retained message is sent only
        # for a subscription that did not exist yet, so reconnecting does not ingest it again.
        options = SubscribeOptions(qos=self.config.qos, retainHandling=1)
        await client.subscribe([(topic, options) for topic in self.config.topics])

    async def _receive(self, client: aiomqtt.Client, deliver: Deliver) -> None:
        """Deliver each message; acknowledge it (PUBACK) from a task of our own once the
        intake holds it on disk, so that the broker keeps and redelivers, after a restart,
        what the daemon had not spooled. Acknowledgements go out in arrival order."""
        acks: asyncio.Queue[tuple[int, int, Receipt] | None] = asyncio.Queue()
        acker = asyncio.create_task(_acknowledge(client, acks), name=f"{self.name} acks")
        share = LoopShare()  # a queue that is never empty never yields either (pacing.py)
        try:
            async for message in client.messages:
                payload = message.payload
                if not isinstance(payload, bytes):  # paho gives bytes; the type allows more
                    payload = b"" if payload is None else str(payload).encode()
                # Size is not checked here: decode_message rejects messages over
                # max_message_bytes (too_large) like any other source's. The broker's own
                # limit (Mosquitto: message_size_limit) bounds what can reach us at all.
                raw = DurableMessage(self.name, payload, topic=message.topic.value)
                await deliver(raw)
                if message.qos:
                    acks.put_nowait((message.mid, message.qos, raw.receipt))
                await share.turn()
        finally:
            # Stopping (or the link failed): what was delivered is acknowledged first, if
            # that is quick; the rest the broker delivers again (at least once).
            acks.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(acker, FLUSH_ACKS_S)


async def _acknowledge(
    client: aiomqtt.Client, acks: asyncio.Queue[tuple[int, int, Receipt] | None]
) -> None:
    """Until the None at the end of the queue."""
    while (item := await acks.get()) is not None:
        mid, qos, receipt = item
        if receipt.durable is not None:
            await receipt.durable()  # after the first, most are on disk already
        with contextlib.suppress(aiomqtt.MqttError, OSError):  # a link that is gone
            acknowledge(client, mid, qos)
