"""streamd.connectors: text in from ZeroMQ and MQTT, summaries out. asyncio, never torch.

Sources (`async with source: await source.run(deliver)`) hand each received
message, undecoded, to `deliver`; `decode_message` turns it into clean lines
or a rejection with a reason. Sinks (`async with sink: await sink.emit(rec)`)
write summaries. `send_lines_zmq` / `send_lines_mqtt` are `streamd send`.
"""

from streamd.errors import ConfigError

from .messages import (
    DEFAULT_DECODER,
    Accepted,
    Decoded,
    DecoderConfig,
    Deliver,
    RawMessage,
    Rejected,
    RejectReason,
    Source,
    decode_message,
)
from .mqtt_broker import MqttBrokerConfig
from .mqtt_sink import MqttSink, MqttSinkConfig
from .mqtt_source import MqttSource, MqttSourceConfig
from .outputs import (
    JsonlFileSink,
    Sink,
    StdoutSink,
    ZmqPubSink,
    json_line,
    last_record,
    last_seq,
)
from .sender import SendReport, send_lines_acked, send_lines_mqtt, send_lines_zmq
from .zmq_sources import ZmqPullConfig, ZmqPullSource, ZmqSubConfig, ZmqSubSource

__all__ = [
    "DEFAULT_DECODER",
    "Accepted",
    "ConfigError",
    "Decoded",
    "DecoderConfig",
    "Deliver",
    "JsonlFileSink",
    "MqttBrokerConfig",
    "MqttSink",
    "MqttSinkConfig",
    "MqttSource",
    "MqttSourceConfig",
    "RawMessage",
    "RejectReason",
    "Rejected",
    "SendReport",
    "Sink",
    "Source",
    "StdoutSink",
    "ZmqPubSink",
    "ZmqPullConfig",
    "ZmqPullSource",
    "ZmqSubConfig",
    "ZmqSubSource",
    "decode_message",
    "json_line",
    "last_record",
    "last_seq",
    "send_lines_acked",
    "send_lines_mqtt",
    "send_lines_zmq",
]
