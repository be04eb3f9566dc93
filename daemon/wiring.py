"""The daemon's connectors, built from its Config: sources in, summary outputs out.

Source names label the counters in `status` and the metrics: zmq-pull and zmq-acked (with
-2, -3... when several addresses are bound), zmq-sub, mqtt.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog

from streamd.connectors import (
    JsonlFileSink,
    MqttSink,
    MqttSinkConfig,
    MqttSource,
    MqttSourceConfig,
    Sink,
    Source,
    StdoutSink,
    ZmqPubSink,
    ZmqPullConfig,
    ZmqPullSource,
    ZmqSubConfig,
    ZmqSubSource,
)
from streamd.connectors.zmq_acked import ZmqAckedConfig, ZmqAckedSource
from streamd.connectors.zmq_security import (
    CurveClientKeys,
    CurveKeyPair,
    ZapAuthenticator,
    load_authorized_keys,
    load_key_pair,
    load_public_key,
)

from .config import BLOCK, Config, SecurityConfig
from .config.exposure import exposed, is_loopback_host
from .metrics import StreamdMetrics
from .output_queue import OutputQueue

# How long a summary waits for the outputs that were keeping up to write it...
OUTPUT_WAIT_S = 5.0
# ...and how long closing lets every output's queue drain (the final summary's record).
OUTPUT_DRAIN_S = 2.0

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    source: Source
    key: str  # the config key that made it, for error messages
    # The backpressure policy: block (wait for room) or drop-oldest (see ingest.py).
    # PULL senders can wait for us; publishers cannot.
    wait_when_full: bool


@dataclass(frozen=True)
class ZmqKeys:
    """The CURVE keys that the security.* files hold; None where that side of CURVE is off."""

    server: CurveKeyPair | None = None  # every bind is a CURVE server with this pair
    authorized: frozenset[bytes] = field(default=frozenset(), repr=False)  # clients let in
    sub_client: CurveClientKeys | None = None  # sources.zmq_sub connects with these


def load_zmq_keys(security: SecurityConfig) -> ZmqKeys:
    """Reads and checks the key files; a ConfigError names the key and the file."""
    if security.zmq_curve_secret_key_file is None:
        return ZmqKeys()
    pair = load_key_pair("security.zmq_curve_secret_key_file", security.zmq_curve_secret_key_file)
    keys = ZmqKeys()
    if security.zmq_curve_authorized_keys is not None:
        setting = "security.zmq_curve_authorized_keys"
        authorized = load_authorized_keys(setting, security.zmq_curve_authorized_keys)
        keys = ZmqKeys(server=pair, authorized=authorized)
    if security.zmq_sub_server_key is not None:
        server = load_public_key("security.zmq_sub_server_key", security.zmq_sub_server_key)
        keys = ZmqKeys(keys.server, keys.authorized, CurveClientKeys(pair, server))
    return keys


async def open_zmq_security(config: Config, resources: AsyncExitStack) -> ZmqKeys:
    """Before any ZeroMQ socket binds: the keys read, and with CURVE on binds, the ZAP
    authenticator listening (closed with `resources`). Without it, binds beyond loopback
    were refused by the config unless allow_insecure: then this warns, loudly."""
    keys = load_zmq_keys(config.security)
    binds = config.zmq_binds()
    if keys.server is not None:
        authenticator = ZapAuthenticator(keys.authorized)
        await authenticator.open()
        resources.push_async_callback(authenticator.close)
        log.info(
            "zmq CURVE on",
            binds=[bind.endpoint for bind in binds],
            authorized_keys=len(keys.authorized),
        )
    outside = [bind.endpoint for bind in exposed(binds)]
    if outside and keys.server is None:
        log.warning(
            "INSECURE: ZeroMQ sockets listen beyond loopback without authentication; anyone "
            "who reaches them can feed the session (security.allow_insecure = true)",
            endpoints=outside,
        )
    metrics = config.metrics
    if metrics.enabled and not is_loopback_host(metrics.host):
        log.warning(
            "INSECURE: /metrics is served beyond loopback without authentication "
            "(security.allow_insecure = true)",
            host=metrics.host,
            port=metrics.port,
        )
    return keys


def build_sources(config: Config, keys: ZmqKeys | None = None) -> list[SourceSpec]:
    """Every configured source; raises ConfigError (a ValueError) on a bad one."""
    sources, keys = config.sources, keys or ZmqKeys()
    specs = []
    for index, bind in enumerate(sources.zmq_pull):
        name = "zmq-pull" if index == 0 else f"zmq-pull-{index + 1}"
        pull = ZmqPullSource(ZmqPullConfig(bind=bind, name=name, curve=keys.server))
        block = sources.zmq_pull_backpressure == BLOCK
        specs.append(SourceSpec(pull, "sources.zmq_pull", wait_when_full=block))
    for index, bind in enumerate(config.acked_binds()):
        name = "zmq-acked" if index == 0 else f"zmq-acked-{index + 1}"
        acked = ZmqAckedSource(ZmqAckedConfig(bind=bind, name=name, curve=keys.server))
        # Acknowledged delivery always waits: a sender holds what we do not acknowledge.
        specs.append(SourceSpec(acked, "sources.zmq_acked", wait_when_full=True))
    if sources.zmq_sub:
        sub = ZmqSubSource(ZmqSubConfig(connect=sources.zmq_sub, curve=keys.sub_client))
        specs.append(SourceSpec(sub, "sources.zmq_sub", wait_when_full=False))
    if sources.mqtt.enabled:
        mqtt = MqttSourceConfig(
            broker=sources.mqtt.broker(), topics=sources.mqtt.topics, qos=sources.mqtt.qos
        )
        specs.append(SourceSpec(MqttSource(mqtt), "sources.mqtt", wait_when_full=False))
    return specs


def build_sinks(config: Config, keys: ZmqKeys | None = None) -> list[tuple[Sink, str]]:
    """Every configured output with its config key; raises ConfigError."""
    outputs, keys = config.outputs, keys or ZmqKeys()
    sinks: list[tuple[Sink, str]] = []
    if outputs.stdout:
        sinks.append((StdoutSink(), "outputs.stdout"))
    if outputs.jsonl is not None:
        sinks.append((JsonlFileSink(outputs.jsonl), "outputs.jsonl"))
    if outputs.zmq_pub is not None:
        sinks.append((ZmqPubSink(outputs.zmq_pub, curve=keys.server), "outputs.zmq_pub"))
    if outputs.mqtt_topic is not None:
        mqtt = MqttSinkConfig(broker=config.sources.mqtt.broker(), topic=outputs.mqtt_topic)
        sinks.append((MqttSink(mqtt), "outputs.mqtt_topic"))
    return sinks


def count_reconnects(sources: list[SourceSpec], metrics: StreamdMetrics) -> None:
    """Copy the MQTT links' failure counts into streamd_source_reconnects_total."""
    for spec in sources:
        link = getattr(spec.source, "link", None)
        if link is None:
            continue
        name = spec.source.name
        counted = metrics.source_reconnects.value(source=name)
        if link.connection_errors > counted:
            metrics.source_reconnects.inc(link.connection_errors - counted, source=name)


class Outputs:
    """Hands each summary record to every sink's own bounded queue (output_queue.py), so a
    stuck output drops its oldest records (counted) instead of stalling the daemon; one
    failing sink does not stop the others."""

    def __init__(self, sinks: list[Sink], metrics: StreamdMetrics) -> None:
        self.sinks = sinks  # the service appends each one as it opens it
        self._metrics = metrics
        self._queues: dict[int, OutputQueue] = {}  # by id(sink)

    @property
    def names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    def queues(self) -> list[OutputQueue]:
        return [self._queue(sink) for sink in self.sinks]

    def _queue(self, sink: Sink) -> OutputQueue:
        if id(sink) not in self._queues:
            self._queues[id(sink)] = OutputQueue(sink, self._metrics)
        return self._queues[id(sink)]

    def counts(self) -> dict[str, dict[str, int]]:
        """{output: {written, queued, dropped}} for `status`."""
        dropped = self._metrics.output_dropped.values()
        return {
            queue.sink.name: {
                "written": queue.written,
                "queued": queue.queued,
                "dropped": int(
                    sum(n for (name, _), n in dropped.items() if name == queue.sink.name)
                ),
            }
            for queue in self.queues()
        }

    async def emit(self, record: Mapping[str, Any]) -> None:
        """Queue the record for every sink, then wait (at most OUTPUT_WAIT_S) for those that were
        keeping up to write it: a JSONL record is on disk when `summarize` answers, while an
        output already behind is not waited for at all."""
        waits = [done for queue in self.queues() if (done := queue.put(record)) is not None]
        if waits:
            await asyncio.wait(waits, timeout=OUTPUT_WAIT_S)

    async def close(self) -> None:
        """Each queue drains for at most OUTPUT_DRAIN_S (all at once), then every sink closes."""
        await asyncio.gather(*(queue.close(OUTPUT_DRAIN_S) for queue in self.queues()))
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:  # the others must still close (and flush)
                log.exception("closing an output failed", output=sink.name)
