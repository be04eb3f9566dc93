"""MQTT over TLS against a real Mosquitto that verifies client certificates."""

from __future__ import annotations

import dataclasses
from typing import Any

import aiomqtt
import pytest
from connector_testing import Inbox, TlsFiles, eventually, running

from streamd.connectors.mqtt_broker import MqttBrokerConfig, tls_context
from streamd.connectors.mqtt_source import MqttSource, MqttSourceConfig

pytestmark = pytest.mark.network


@pytest.fixture
def tls_broker(mosquitto_factory: Any, tls_files: TlsFiles) -> Any:
    return mosquitto_factory(
        f"cafile {tls_files.ca}\ncertfile {tls_files.server_cert}\n"
        f"keyfile {tls_files.server_key}\nrequire_certificate true\n"
    )


def tls_settings(broker: Any, files: TlsFiles, with_client_cert: bool = True) -> MqttBrokerConfig:
    client_files = {}
    if with_client_cert:
        client_files = {"cert_file": str(files.client_cert), "key_file": str(files.client_key)}
    return MqttBrokerConfig(
        host=broker.host,
        port=broker.port,
        ca_file=str(files.ca),
        backoff_min_s=0.05,
        backoff_max_s=0.1,
        timeout_s=2.0,
        **client_files,
    )


async def test_source_receives_over_mutual_tls(tls_broker: Any, tls_files: TlsFiles) -> None:
    settings = tls_settings(tls_broker, tls_files)
    inbox = Inbox()
    source = MqttSource(MqttSourceConfig(broker=settings, topics=("secure/#",)))
    async with source, running(source.run(inbox)):
        await eventually(lambda: source.connected, "a TLS connection")
        publisher_tls = tls_context(settings)
        async with aiomqtt.Client(
            settings.host, settings.port, identifier="tls-pub", tls_context=publisher_tls
        ) as publisher:
            await publisher.publish("secure/a", b"over tls", qos=1)
        assert await inbox.wait_for(1) == [b"over tls"]


async def test_without_a_client_certificate_it_keeps_retrying(
    tls_broker: Any, tls_files: TlsFiles
) -> None:
    settings = tls_settings(tls_broker, tls_files, with_client_cert=False)
    # A refused TLS client only learns it when no CONNACK comes: keep that wait short.
    settings = dataclasses.replace(settings, timeout_s=0.3)
    source = MqttSource(MqttSourceConfig(broker=settings))
    async with source, running(source.run(Inbox())):
        await eventually(lambda: source.link.connection_errors >= 2, "two refused attempts")
        assert not source.connected
    assert "peer did not return a certificate" in tls_broker.log()


def test_tls_is_on_when_any_file_is_given(tls_files: TlsFiles) -> None:
    assert not MqttBrokerConfig().uses_tls
    assert MqttBrokerConfig(ca_file=str(tls_files.ca)).uses_tls
    assert tls_context(MqttBrokerConfig(tls=True)) is not None  # system CAs
