"""The daemon's connectors, built from its Config: sources in, summary outputs out.

Source names label the counters in `status` and the metrics: zmq-pull (with
-2, -3... when several addresses are bound), zmq-sub, mqtt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from streamd.connectors import (
    JsonlFileSink,
    MqttBrokerConfig,
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

from .config import Config, MqttConfig
from .metrics import StreamdMetrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    source: Source
    key: str  # the config key that made it, for error messages
    # PULL senders can wait for us; publishers cannot (see ingest.py).
    wait_when_full: bool


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


def mqtt_broker(mqtt: MqttConfig) -> MqttBrokerConfig:
    return MqttBrokerConfig(
        host=mqtt.host or "",
        port=mqtt.port,
        client_id=mqtt.client_id,
        username=mqtt.username,
        password=mqtt.password,
        tls=mqtt.tls,
        ca_file=_path(mqtt.tls_ca),
        cert_file=_path(mqtt.tls_cert),
        key_file=_path(mqtt.tls_key),
        # TLS file errors then name the key the user wrote, not the connector's field.
        setting_names={
            "ca_file": "sources.mqtt.tls_ca",
            "cert_file": "sources.mqtt.tls_cert",
            "key_file": "sources.mqtt.tls_key",
        },
    )


def build_sources(config: Config) -> list[SourceSpec]:
    """Every configured source; raises connectors.ConfigError (a ValueError) on a bad one."""
    sources = config.sources
    specs = []
    for index, bind in enumerate(sources.zmq_pull):
        name = "zmq-pull" if index == 0 else f"zmq-pull-{index + 1}"
        pull = ZmqPullSource(ZmqPullConfig(bind=bind, name=name))
        specs.append(SourceSpec(pull, "sources.zmq_pull", wait_when_full=True))
    if sources.zmq_sub:
        sub = ZmqSubSource(ZmqSubConfig(connect=sources.zmq_sub))
        specs.append(SourceSpec(sub, "sources.zmq_sub", wait_when_full=False))
    if sources.mqtt.enabled:
        mqtt = MqttSourceConfig(
            broker=mqtt_broker(sources.mqtt), topics=sources.mqtt.topics, qos=sources.mqtt.qos
        )
        specs.append(SourceSpec(MqttSource(mqtt), "sources.mqtt", wait_when_full=False))
    return specs


def build_sinks(config: Config) -> list[tuple[Sink, str]]:
    """Every configured output with its config key; raises connectors.ConfigError."""
    outputs = config.outputs
    sinks: list[tuple[Sink, str]] = []
    if outputs.stdout:
        sinks.append((StdoutSink(), "outputs.stdout"))
    if outputs.jsonl is not None:
        sinks.append((JsonlFileSink(outputs.jsonl), "outputs.jsonl"))
    if outputs.zmq_pub is not None:
        sinks.append((ZmqPubSink(outputs.zmq_pub), "outputs.zmq_pub"))
    if outputs.mqtt_topic is not None:
        mqtt = MqttSinkConfig(broker=mqtt_broker(config.sources.mqtt), topic=outputs.mqtt_topic)
        sinks.append((MqttSink(mqtt), "outputs.mqtt_topic"))
    return sinks


class Outputs:
    """Writes each summary record to every sink; one failing sink does not stop the others."""

    def __init__(self, sinks: list[Sink], metrics: StreamdMetrics) -> None:
        self.sinks = sinks
        self._errors = metrics.output_errors

    @property
    def names(self) -> list[str]:
        return [sink.name for sink in self.sinks]

    async def emit(self, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            try:
                await sink.emit(record)
            except Exception:
                self._errors.inc(output=sink.name)
                log.exception("summary output failed", output=sink.name, seq=record.get("seq"))

    async def close(self) -> None:
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:  # the others must still close (and flush)
                log.exception("closing an output failed", output=sink.name)
