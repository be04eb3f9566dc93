"""How streamd reaches an MQTT broker: settings, TLS, client construction, backoff.

Shared by the MQTT source, the MQTT summary sink and `streamd send --mqtt-topic`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .checks import ConfigError, check_port, check_positive, check_readable_file, require

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MqttBrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883  # 8883 is the usual TLS port
    # The persistent session is keyed by this id: keep it fixed across restarts,
    # and unique per daemon (a second client with the same id kicks the first off).
    client_id: str = "streamd"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs or status
    tls: bool = False  # implied by any of the three paths below
    ca_file: str | None = None  # trust these CAs instead of the system's
    cert_file: str | None = None  # client certificate, for brokers that ask for one
    key_file: str | None = None  # its key, when not inside cert_file
    keepalive_s: int = 60
    timeout_s: float = 10.0  # one connect/subscribe/publish acknowledgement
    backoff_min_s: float = 0.5  # first wait before reconnecting; doubles per failure
    backoff_max_s: float = 30.0  # the cap: a broker back after an outage is found within this
    # What the user calls ca_file, cert_file and key_file, for error messages:
    # e.g. {"ca_file": "--mqtt-tls-ca"}. A field left out reads "mqtt ca_file".
    setting_names: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        require(bool(self.host.strip()), "mqtt host = '': give the broker's host name or address")
        check_port("mqtt port", self.port)
        require(bool(self.client_id.strip()), "mqtt client_id = '': give a fixed, unique id")
        require(
            self.password is None or self.username is not None,
            "mqtt password is set but username is not: set mqtt username too",
        )
        require(
            self.key_file is None or self.cert_file is not None,
            "mqtt key_file is set but cert_file is not: set cert_file (the client certificate)",
        )
        for name in ("ca_file", "cert_file", "key_file"):
            check_readable_file(self.setting(name), getattr(self, name))
        check_positive("mqtt keepalive_s", self.keepalive_s)
        check_positive("mqtt timeout_s", self.timeout_s)
        check_positive("mqtt backoff_min_s", self.backoff_min_s)
        require(
            self.backoff_max_s >= self.backoff_min_s,
            f"mqtt backoff_max_s = {self.backoff_max_s!r} is below backoff_min_s = "
            f"{self.backoff_min_s!r}: raise backoff_max_s",
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.ca_file, self.cert_file, self.key_file))

    def setting(self, name: str) -> str:
        """The name to show the user for field `name` (see setting_names)."""
        return self.setting_names.get(name, f"mqtt {name}")


def check_topic_filter(name: str, topic: str) -> None:
    """MQTT filter rules: '#' only as the whole last level, '+' only as a whole level."""
    levels = topic.split("/")
    well_formed = (
        topic != ""
        and "\x00" not in topic
        and all(level in ("#", "+") or not ({"#", "+"} & set(level)) for level in levels)
        and "#" not in levels[:-1]
    )
    require(well_formed, f"{name}: {topic!r} is not a valid filter (e.g. logs/#, logs/+/app)")


def check_topic_name(name: str, topic: str) -> None:
    """A topic to publish to: no wildcards."""
    require(
        topic != "" and not ({"#", "+", "\x00"} & set(topic)),
        f"{name} = {topic!r}: give a topic name without wildcards, e.g. streamd/summary",
    )


def tls_context(broker: MqttBrokerConfig) -> ssl.SSLContext | None:
    """A verifying TLS context (server certificate and host name), or None for plain TCP.

    Raises ConfigError, naming the setting and the file, when a CA, certificate
    or key file cannot be read or is not PEM (or the key does not match).
    """
    if not broker.uses_tls:
        return None
    try:
        context = ssl.create_default_context(cafile=broker.ca_file)
    except OSError as error:  # ssl.SSLError is an OSError
        fix = "it must be a readable PEM file of CA certificates"
        raise _unusable_files(broker, ("ca_file",), fix, error) from None
    if broker.cert_file is not None:
        try:
            context.load_cert_chain(broker.cert_file, broker.key_file)
        except OSError as error:
            fix = "give readable PEM files: the client certificate and its matching key"
            raise _unusable_files(broker, ("cert_file", "key_file"), fix, error) from None
    return context


# OpenSSL's messages end with where in CPython they came from: "... (_ssl.c:4154)".
_SSL_SOURCE_LINE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def _unusable_files(
    broker: MqttBrokerConfig, names: tuple[str, ...], fix: str, error: OSError
) -> ConfigError:
    given = [(name, getattr(broker, name)) for name in names]
    files = ", ".join(f"{broker.setting(name)} = {path!r}" for name, path in given if path)
    files = files or "the system's CA certificates"  # tls on, no ca_file
    why = _SSL_SOURCE_LINE.sub("", error.strerror or str(error))
    return ConfigError(f"{files}: cannot be loaded ({why}); {fix}")


def make_client(
    broker: MqttBrokerConfig,
    client_id: str,
    session_expiry_s: int | None = None,
    tls: ssl.SSLContext | None = None,
) -> aiomqtt.Client:
    """An MQTT v5 client; with `session_expiry_s`, a persistent session.

    A persistent session (clean_start=False and a session expiry interval)
    makes the broker keep our subscriptions and queue QoS >= 1 messages while
    we are away, and deliver them when the same client id connects again.
    """
    properties = None
    if session_expiry_s is not None:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
    return aiomqtt.Client(
        broker.host,
        broker.port,
        identifier=client_id,
        username=broker.username,
        password=broker.password,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=session_expiry_s is None,
        properties=properties,
        keepalive=broker.keepalive_s,
        timeout=broker.timeout_s,
        tls_context=tls,
    )


class Backoff:
    """Capped exponential delays: min, 2 min, 4 min, ... max; `reset()` after a success."""

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s = min_s
        self._max_s = max_s
        self.failures = 0  # since the last success

    def next_delay(self) -> float:
        # The exponent is capped so that a broker down for days cannot overflow a float.
        delay = min(self._max_s, self._min_s * 2 ** min(self.failures, 60))
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


Session = Callable[[aiomqtt.Client], Awaitable[None]]


class MqttLink:
    """One broker connection, kept up by a reconnect loop that we own (aiomqtt leaves it to us).

    `run(session)` connects and awaits `session(client)`; when the connection
    fails (or cannot be made) it logs, waits a capped doubling delay and
    connects again, forever.

    manual_ack=True (a source that spools): no PUBACK goes out until the source
    calls `acknowledge` (the message is on disk); the broker redelivers what was
    not acknowledged when the link comes back (at least once).

    reuse_client=True (a source that acknowledges on receipt) connects again with
    the same client object: messages that it received but were not yet consumed
    stay in its queue and are not lost. A publisher wants False: paho would
    resend its unacknowledged publishes on reconnect, while the publisher sends
    them again itself.
    """

    def __init__(
        self,
        broker: MqttBrokerConfig,
        client_id: str,
        label: str,
        session_expiry_s: int | None = None,
        tls: ssl.SSLContext | None = None,
        reuse_client: bool = True,
        manual_ack: bool = False,
    ) -> None:
        self.broker = broker
        self.label = label  # names this link in logs: "mqtt source mqtt", "mqtt sink"
        self.connected = False  # connected and prepared, for status
        self.connection_errors = 0  # lost connections and failed attempts
        self._client_id = client_id
        self._session_expiry_s = session_expiry_s
        self._tls = tls
        self._reuse_client = reuse_client
        self._manual_ack = manual_ack

    async def run(self, session: Session, prepare: Session | None = None) -> None:
        """Until cancelled (or until `session` returns): stay connected and run `session`.

        `prepare` (e.g. subscribing) runs on each new connection before
        `connected` turns true; `session` then runs until the link fails.
        """
        backoff = Backoff(self.broker.backoff_min_s, self.broker.backoff_max_s)
        client: aiomqtt.Client | None = None
        while True:
            if client is None or not self._reuse_client:
                client = self._new_client()
            try:
                async with client:
                    if prepare is not None:
                        await prepare(client)
                    self._note_connected(backoff)
                    await session(client)
                    return
            except aiomqtt.MqttError as exc:
                error = exc
            finally:
                self.connected = False
            await self._wait_to_reconnect(backoff, error)

    def _new_client(self) -> aiomqtt.Client:
        client = make_client(self.broker, self._client_id, self._session_expiry_s, self._tls)
        if self._manual_ack:
            # aiomqtt has no option for it; paho's own client has (manual_ack_set, ack):
            # set before connecting, since a persistent session's queued messages come at once.
            client._client.manual_ack_set(True)
        return client

    def _note_connected(self, backoff: Backoff) -> None:
        self.connected = True
        backoff.reset()
        log.info("mqtt connected", link=self.label, broker=f"{self.broker.host}:{self.broker.port}")

    async def _wait_to_reconnect(self, backoff: Backoff, error: aiomqtt.MqttError) -> None:
        self.connection_errors += 1
        delay = backoff.next_delay()
        log.warning(
            "mqtt reconnecting",
            link=self.label,
            broker=f"{self.broker.host}:{self.broker.port}",
            error=str(error),
            failures=backoff.failures,
            delay_s=delay,
        )
        await asyncio.sleep(delay)


def acknowledge(client: aiomqtt.Client, mid: int, qos: int) -> None:
    """The PUBACK (QoS 1) or PUBCOMP (QoS 2) of a message, on a manual_ack link."""
    client._client.ack(mid, qos)


async def until_disconnected(client: aiomqtt.Client) -> None:
    """Returns never; raises MqttError as soon as the client's connection drops.

    For a client that subscribes to nothing: its message iterator yields
    nothing and ends, raising, when the link goes.
    """
    async for _ in client.messages:
        pass
