"""MQTT over TLS against a real Mosquitto that verifies client certificates."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from connector_testing import Inbox, TlsFiles, eventually, running

from streamd.connectors.checks import ConfigError
from streamd.connectors.mqtt_broker import MqttBrokerConfig, tls_context
from streamd.connectors.mqtt_sink import MqttSink, MqttSinkConfig
from streamd.connectors.mqtt_source import MqttSource, MqttSourceConfig
from streamd.connectors.sender import send_lines_mqtt

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


def test_a_ca_file_that_is_not_pem_is_a_config_error_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    broker = MqttBrokerConfig(ca_file=str(bad))
    message = rf"^mqtt ca_file = '{re.escape(str(bad))}': cannot be loaded \(.*NO_CERTIFICATE.*\); "
    message += "it must be a readable PEM file of CA certificates$"
    with pytest.raises(ConfigError, match=message):
        MqttSource(MqttSourceConfig(broker=broker))
    with pytest.raises(ConfigError, match=message):
        MqttSink(MqttSinkConfig(broker=broker))
    with pytest.raises(ConfigError, match=message):
        send_lines_mqtt(["a"], broker, "in/logs")


def test_a_key_that_does_not_match_the_certificate_names_both_settings(
    tls_files: TlsFiles,
) -> None:
    names = {"cert_file": "sources.mqtt.tls_cert", "key_file": "sources.mqtt.tls_key"}
    broker = MqttBrokerConfig(
        cert_file=str(tls_files.client_cert),
        key_file=str(tls_files.server_key),  # the wrong key
        setting_names=names,
    )
    with pytest.raises(ConfigError) as refused:
        tls_context(broker)
    assert str(refused.value) == (
        f"sources.mqtt.tls_cert = '{tls_files.client_cert}', "
        f"sources.mqtt.tls_key = '{tls_files.server_key}': cannot be loaded "
        "([X509: KEY_VALUES_MISMATCH] key values mismatch); "
        "give readable PEM files: the client certificate and its matching key"
    )


@contextlib.contextmanager
def not_root() -> Iterator[None]:
    """Root reads any file: while the tests run as root, be `nobody` for the block."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)  # the saved uid stays 0, so this can be undone
    try:
        yield
    finally:
        os.seteuid(0)


def test_an_unreadable_ca_file_is_a_config_error_not_a_permission_error(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    unreadable = tmp_path / "ca.pem"
    unreadable.write_bytes(tls_files.ca.read_bytes())
    unreadable.chmod(0)
    message = (
        rf"^mqtt ca_file = '{re.escape(str(unreadable))}': cannot be read \(Permission denied\)"
    )
    with (
        not_root(),
        pytest.raises(ConfigError, match=message + "; it must be a readable PEM file$"),
    ):
        MqttBrokerConfig(ca_file=str(unreadable))


def test_a_directory_is_not_taken_for_a_ca_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"': not a regular file; it must be a readable PEM file$"
    ):
        MqttBrokerConfig(ca_file=str(tmp_path))
