"""Connector configs refuse bad values at the edge, naming the setting, the value and the fix."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamd.connectors.checks import ConfigError
from streamd.connectors.messages import DecoderConfig
from streamd.connectors.mqtt_broker import MqttBrokerConfig
from streamd.connectors.mqtt_sink import MqttSinkConfig
from streamd.connectors.mqtt_source import MqttSourceConfig
from streamd.connectors.outputs import ZmqPubSink
from streamd.connectors.zmq_sources import ZmqPullConfig, ZmqSubConfig

REFUSED: list[tuple[Callable[[], object], str]] = [
    (lambda: DecoderConfig(max_message_bytes=0), r"max_message_bytes = 0: must be greater than 0"),
    (lambda: DecoderConfig(max_line_chars=-1), r"max_line_chars = -1: must be greater than 0"),
    (lambda: ZmqPullConfig(bind="127.0.0.1:5555"), r"a ZeroMQ address looks like tcp://"),
    (lambda: ZmqPullConfig(hwm=0), r"zmq-pull hwm = 0"),
    (lambda: ZmqSubConfig(connect=()), r"give at least one publisher address"),
    (lambda: ZmqSubConfig(connect=("udp://x",)), r"'udp://x'"),
    (lambda: ZmqPubSink("localhost:5556"), r"zmq pub bind = 'localhost:5556'"),
    (lambda: MqttBrokerConfig(port=0), r"mqtt port = 0: a TCP port is 1..65535"),
    (lambda: MqttBrokerConfig(password="x"), r"set mqtt username too"),
    (lambda: MqttBrokerConfig(key_file="/k.pem"), r"set cert_file"),
    (lambda: MqttBrokerConfig(ca_file="/nonexistent.pem"), r"'/nonexistent.pem': no such file"),
    (lambda: MqttBrokerConfig(backoff_min_s=5, backoff_max_s=1), r"raise backoff_max_s"),
    (lambda: MqttSourceConfig(topics=()), r"give at least one topic filter"),
    (lambda: MqttSourceConfig(topics=("a/#/b",)), r"'a/#/b' is not a valid filter"),
    (lambda: MqttSourceConfig(topics=("a+",)), r"'a\+' is not a valid filter"),
    (lambda: MqttSourceConfig(qos=3), r"mqtt qos = 3: use 0, 1 or 2"),
    (lambda: MqttSinkConfig(topic="streamd/#"), r"'streamd/#': give a topic name without"),
    (lambda: MqttSinkConfig(max_pending=0), r"max_pending = 0"),
]


@pytest.mark.parametrize(("make", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_bad_value_is_refused_with_the_value_and_fix(
    make: Callable[[], object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make()


def test_lists_from_config_files_are_frozen_into_tuples() -> None:
    sub = ZmqSubConfig(connect=["tcp://127.0.0.1:1"])  # type: ignore[arg-type]
    source = MqttSourceConfig(topics=["a/#"])  # type: ignore[arg-type]
    assert (sub.connect, source.topics) == (("tcp://127.0.0.1:1",), ("a/#",))


def test_password_never_shows_in_repr() -> None:
    config = MqttBrokerConfig(username="u", password="s3cret")
    assert "s3cret" not in repr(config) and "s3cret" not in repr(MqttSourceConfig(broker=config))


def test_mqtt_sink_never_shares_the_source_client_id() -> None:
    assert MqttSinkConfig().effective_client_id == "streamd-out"
    assert MqttSinkConfig(client_id="x").effective_client_id == "x"
