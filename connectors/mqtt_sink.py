"""MQTT summary sink: QoS 1, the latest summary retained, published from a background task."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field

import aiomqtt
import structlog

from .checks import check_positive, require
from .mqtt_broker import (
    MqttBrokerConfig,
    MqttLink,
    check_topic_name,
    tls_context,
    until_disconnected,
)
from .outputs import Record, SinkBase, json_line

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MqttSinkConfig:
    broker: MqttBrokerConfig = field(default_factory=MqttBrokerConfig)
    topic: str = "streamd/summary"
    qos: int = 1
    retain: bool = True  # a late subscriber gets the latest summary at once
    # Not the source's id: two clients with one id kick each other off the broker.
    client_id: str | None = None  # None: the broker's client_id + "-out"
    max_pending: int = 100  # summaries held while the broker is away; oldest dropped first
    close_timeout_s: float = 2.0  # on close, how long pending summaries may take to go out

    def __post_init__(self) -> None:
        check_topic_name("mqtt output topic", self.topic)
        require(self.qos in (0, 1, 2), f"mqtt output qos = {self.qos!r}: use 0, 1 or 2")
        check_positive("mqtt output max_pending", self.max_pending)
        check_positive("mqtt output close_timeout_s", self.close_timeout_s)

    @property
    def effective_client_id(self) -> str:
        return self.client_id or f"{self.broker.client_id}-out"


class MqttSink(SinkBase):
    """Publishes summaries to an MQTT topic (QoS 1, retained) from a background task.

    `emit` only queues the record, so a broker outage never stalls the daemon:
    the task publishes in order, each record leaving the queue only once the
    broker has acknowledged it, and reconnects with backoff when the link fails
    (a record whose acknowledgement was lost is sent again: at least once).
    While the broker is away at most `max_pending` records wait; older ones
    are dropped and counted in `dropped`.
    """

    name = "mqtt"

    def __init__(self, config: MqttSinkConfig) -> None:
        self.config = config
        self.dropped = 0
        # tls_context reads the TLS files now: a bad one is a ConfigError at start.
        self.link = MqttLink(
            config.broker,
            config.effective_client_id,
            label="mqtt sink",
            tls=tls_context(config.broker),
            reuse_client=False,
        )
        self._pending: deque[bytes] = deque()
        self._in_flight = 0  # 0 or 1: popped from _pending but not yet acknowledged
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending) + self._in_flight

    async def open(self) -> None:
        self._task = asyncio.create_task(self.link.run(self._publish_forever))

    async def emit(self, record: Record) -> None:
        if len(self._pending) >= self.config.max_pending:
            self._pending.popleft()
            self.dropped += 1
            log.warning("mqtt sink dropped a summary", pending=self.pending, dropped=self.dropped)
        self._pending.append(json_line(record).rstrip(b"\n"))
        self._wakeup.set()

    async def close(self) -> None:
        if self._task is None:
            return
        await self._wait_flushed(self.config.close_timeout_s)
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            # Ours, not our caller's: swallow it only if we are not being cancelled too.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        self._task = None

    async def _wait_flushed(self, timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.pending and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        if self.pending:
            log.warning("mqtt sink closed with summaries unpublished", unpublished=self.pending)

    async def _publish_forever(self, client: aiomqtt.Client) -> None:
        # Idle between summaries we would not see the link drop until the next
        # publish timed out (and status would say connected): watch it as well.
        watch = asyncio.create_task(until_disconnected(client))
        publish = asyncio.create_task(self._publish_pending(client))
        try:
            done, _ = await asyncio.wait((watch, publish), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the MqttError that ended it
        finally:
            for task in (watch, publish):
                task.cancel()
            await asyncio.gather(watch, publish, return_exceptions=True)

    async def _publish_pending(self, client: aiomqtt.Client) -> None:
        while True:
            while self._pending:
                await self._publish_oldest(client)
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _publish_oldest(self, client: aiomqtt.Client) -> None:
        payload = self._pending.popleft()
        self._in_flight = 1
        try:
            config = self.config
            await client.publish(config.topic, payload, qos=config.qos, retain=config.retain)
        except BaseException:
            self._pending.appendleft(payload)  # not acknowledged: it goes first after reconnecting
            raise
        finally:
            self._in_flight = 0
