"""The daemon's settings: frozen, typed sections, each checked once when built.

The keys, their types and rules live here; the loader (loader.py) fills them
from a file, the environment and the command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from streamd.cache.families import local_model_refusal

from .exposure import (
    Bind,
    SecurityConfig,
    check_distinct_binds,
    check_exposure,
    is_loopback_host,
)
from .keys import as_dict, build, flatten, given
from .paths import default_client_id, default_control_socket, default_state_dir
from .rules import (
    CHUNK,
    DEFAULT_MODEL,
    DTYPE_CHOICES,
    MAX_CAPACITY,
    PROFILE,
    REFRESH,
    SUMMARY_MAX_TOKENS,
    SUMMARY_MODE,
    UNSUPPORTED,
    Rule,
    Section,
)
from .scheduling import EngineConfig, ShutdownConfig
from .state import SnapshotConfig, SpoolConfig

if TYPE_CHECKING:
    from streamd.connectors import MqttBrokerConfig

# About 2M tokens of text: minutes of backlog for a GPU, bounded memory for the host.
QUEUE_MAX_CHARS = 8 * 1024 * 1024
MAX_TOKENS_PER_CHAR = 8.0  # ingest.max_tokens_per_char (daemon/intake/token_guard.py)


ACKED_SOCKET_NAME = "intake.sock"  # the default acked bind, beside the control socket
# sun_path of a Unix socket holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
# What a source does when the ingest queue is full (sources.*backpressure).
BLOCK, DROP_OLDEST = "block", "drop-oldest"
BACKPRESSURE = Rule(choices=(BLOCK, DROP_OLDEST))
_SUB_CANNOT_BLOCK = (
    "a SUB socket cannot hold its publishers back (PUB drops, uncounted, what a slow "
    "subscriber leaves unread); use drop-oldest, which counts what it drops"
)
_MQTT_CANNOT_BLOCK = (
    "the MQTT client keeps reading into an unbounded queue of its own while we wait, so "
    "waiting would not hold the broker back; use drop-oldest, which counts what it drops"
)
_ENDPOINT = re.compile(r"^(tcp://[^\s]+:(\d+|\*)|ipc://[^\s]+)$")
_ABSOLUTE_PATH = Rule(absolute=True)
_OFF_AT_0 = Rule(at_least=0, hint="0 turns it off")


@dataclass(frozen=True)
class ModelConfig(Section):
    section: ClassVar[str] = "model"

    # "default" is the SmolLM2-135M-Instruct GGUF shipped with the package (no download);
    # anything else is a Hugging Face repo id or a local model directory.
    name: str = field(
        default=DEFAULT_MODEL, metadata=Rule(pattern=r".+", expect="a model name").meta
    )
    device: str = field(
        default="auto",
        metadata=Rule(
            pattern=r"auto|cpu|cuda(:\d+)?", expect="'auto', 'cpu', 'cuda' or 'cuda:N'"
        ).meta,
    )
    dtype: str = field(default="auto", metadata=Rule(choices=DTYPE_CHOICES).meta)
    # CPU threads for the model's matmuls (torch's intra-op pool); 0: torch's own, a core each.
    threads: int = field(
        default=0, metadata=Rule(at_least=0, at_most=4096, hint="0 is one per core").meta
    )

    def _check(self) -> None:
        # A local model of a family streamd cannot drive is refused here, with the other
        # settings, in well under a second: not after torch and transformers have loaded.
        refusal = local_model_refusal(self.name)
        if refusal is not None:
            raise self.invalid("name", refusal)


@dataclass(frozen=True)
class CacheConfig(Section):
    section: ClassVar[str] = "cache"

    # Tokens any query sees, pinned prefix + window. 1024 keeps a 135M model fast and
    # well inside its trained context; raise it for bigger models.
    max_capacity: int = field(default=1024, metadata=MAX_CAPACITY.meta)
    # Largest prefill chunk: a bigger chunk is faster per token but adds ring slots.
    chunk: int = field(default=256, metadata=CHUNK.meta)
    # Recomputing the window from its own tokens: "auto", "off" or every N (cache/layout.py).
    refresh: str = field(default="auto", metadata=REFRESH.meta)
    # The session's instructions, pinned at the start of the cache with the chat header
    # (they are the attention sinks). Empty: the built-in prompt, which frames the
    # stream as untrusted data.
    system_prompt: str = ""


@dataclass(frozen=True)
class SummaryConfig(Section):
    section: ClassVar[str] = "summary"

    every_tokens: int = field(default=2048, metadata=_OFF_AT_0.meta)
    # Only fires if new text arrived since the last summary.
    every_seconds: float = field(default=60.0, metadata=_OFF_AT_0.meta)
    max_tokens: int = field(default=128, metadata=SUMMARY_MAX_TOKENS.meta)
    # A time budget beside the token budget: past it the model writes no more and the
    # summary ends at its last whole sentence (a CPU may take minutes for 128 tokens).
    max_seconds: float = field(default=30.0, metadata=Rule(at_least=0, hint="0: no limit").meta)
    # grounded: the model completes sentences written from mined facts, its claims checked;
    # plain: the bare question and whatever the model writes (a large model on a GPU).
    mode: str = field(default="grounded", metadata=SUMMARY_MODE.meta)
    # What the stream is (the digest and question fit it): decided per window by default.
    profile: str = field(default="auto", metadata=PROFILE.meta)
    # A model sentence with a claim nothing supports: removed (drop-sentence) or kept and listed.
    unsupported: str = field(default="drop-sentence", metadata=UNSUPPORTED.meta)


@dataclass(frozen=True)
class MqttConfig(Section):
    """The MQTT broker connection; subscribes when host and topics are set, and also
    carries outputs.mqtt_topic."""

    section: ClassVar[str] = "sources.mqtt"

    host: str | None = None
    port: int = field(default=1883, metadata=Rule(at_least=1, at_most=65535).meta)
    topics: tuple[str, ...] = ()
    client_id: str = field(
        default_factory=default_client_id, metadata=Rule(pattern=r".+", expect="a client id").meta
    )
    username: str | None = None
    password: str | None = field(default=None, repr=False, metadata=Rule(secret=True).meta)
    tls: bool = False  # implied by tls_ca / tls_cert: TLS against the system CAs
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None  # unset: the key is inside tls_cert
    qos: int = field(default=1, metadata=Rule(at_least=0, at_most=2).meta)
    # When the ingest queue is full. Only drop-oldest works here: see _check.
    backpressure: str = field(default=DROP_OLDEST, metadata=BACKPRESSURE.meta)

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.topics)

    def _check(self) -> None:
        if self.topics and not self.host:
            raise self.invalid("topics", "needs sources.mqtt.host (the broker to subscribe on)")
        if self.password is not None and not self.username:
            raise self.invalid("password", "needs sources.mqtt.username too")
        if self.tls_key is not None and self.tls_cert is None:
            raise self.invalid("tls_key", "needs sources.mqtt.tls_cert (the client certificate)")
        if self.backpressure == BLOCK:
            raise self.invalid("backpressure", _MQTT_CANNOT_BLOCK)

    def broker(self) -> MqttBrokerConfig:
        """These keys as the connectors' own broker settings, which check the TLS files: built
        when the service opens the connection, so a `tune` never re-reads them."""
        from streamd.connectors import MqttBrokerConfig  # pyzmq and aiomqtt: not in every CLI call

        return MqttBrokerConfig(
            host=self.host or "",
            port=self.port,
            client_id=self.client_id,
            username=self.username,
            password=self.password,
            tls=self.tls,
            ca_file=_text(self.tls_ca),
            cert_file=_text(self.tls_cert),
            key_file=_text(self.tls_key),
            # TLS file errors then name the key the user wrote, not the connector's field.
            setting_names={
                "ca_file": self.key("tls_ca"),
                "cert_file": self.key("tls_cert"),
                "key_file": self.key("tls_key"),
            },
        )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _check_endpoints(section: Section, name: str) -> None:
    endpoints = getattr(section, name)
    if any(
        not _ENDPOINT.match(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)
    ):
        raise section.invalid(name, "must be ZeroMQ endpoints: tcp://HOST:PORT or ipc:///PATH")


@dataclass(frozen=True)
class SourcesConfig(Section):
    section: ClassVar[str] = "sources"

    # Loopback by default: a bind on another interface exposes an unauthenticated socket.
    zmq_pull: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    zmq_sub: tuple[str, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    # When the ingest queue is full. block: PULL stops reading, so senders wait and nothing
    # is lost; drop-oldest: the oldest queued lines make room, so the freshest win.
    zmq_pull_backpressure: str = field(default=BLOCK, metadata=BACKPRESSURE.meta)
    # Only drop-oldest works for SUB: see _check.
    zmq_sub_backpressure: str = field(default=DROP_OLDEST, metadata=BACKPRESSURE.meta)
    # ROUTER binds for acknowledged delivery (`streamd send`): a line is acknowledged once
    # spooled, and a sender resends what was not. Unset: ipc://intake.sock beside the
    # control socket (Config.acked_binds); [] turns it off.
    zmq_acked: tuple[str, ...] | None = None

    def _check(self) -> None:
        _check_endpoints(self, "zmq_pull")
        _check_endpoints(self, "zmq_sub")
        if self.zmq_acked:
            _check_endpoints(self, "zmq_acked")
        if self.zmq_sub_backpressure == BLOCK:
            raise self.invalid("zmq_sub_backpressure", _SUB_CANNOT_BLOCK)


@dataclass(frozen=True)
class IngestConfig(Section):
    section: ClassVar[str] = "ingest"

    # The queue between the sources and the model, in characters of text (about 4 a token).
    queue_max_chars: int = field(default=QUEUE_MAX_CHARS, metadata=Rule(at_least=1024).meta)
    # A message with more tokens than this per character (combining marks not counted as
    # characters, 256 tokens of slack) is rejected as token_heavy: stacked marks cost a
    # token a byte and held the engine for minutes. CJK runs about 2, emoji 3 to 4.
    max_tokens_per_char: float = field(
        default=MAX_TOKENS_PER_CHAR, metadata=Rule(at_least=0, hint="0 turns the check off").meta
    )


@dataclass(frozen=True)
class OutputsConfig(Section):
    section: ClassVar[str] = "outputs"

    stdout: bool = True
    jsonl: Path | None = None  # append-only, one JSON object per summary
    zmq_pub: str | None = None  # bind endpoint
    # Published QoS 1, retained, through the sources.mqtt broker connection.
    mqtt_topic: str | None = field(
        default=None, metadata=Rule(pattern=r"[^+#\x00]+", expect="a topic without + or #").meta
    )

    def _check(self) -> None:
        if self.zmq_pub is not None:
            _check_endpoints(self, "zmq_pub")
        if self.jsonl is not None and not self.jsonl.parent.is_dir():
            why = f"the folder {self.jsonl.parent} does not exist: create it, or pick another"
            raise self.invalid("jsonl", why)


@dataclass(frozen=True)
class ControlConfig(Section):
    section: ClassVar[str] = "control"

    socket: Path = field(default_factory=default_control_socket, metadata=_ABSOLUTE_PATH.meta)

    def _check(self) -> None:
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH_BYTES:
            limit = MAX_SOCKET_PATH_BYTES
            raise self.invalid(
                "socket", f"must be at most {limit} bytes long (a Unix socket limit)"
            )


@dataclass(frozen=True)
class MetricsConfig(Section):
    section: ClassVar[str] = "metrics"

    host: str = field(default="127.0.0.1", metadata=Rule(pattern=r".+", expect="a host").meta)
    # 9464 is the port OpenTelemetry's Prometheus exporter uses by convention.
    port: int = field(
        default=9464, metadata=Rule(at_least=0, at_most=65535, hint="0 turns it off").meta
    )

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True)
class LogConfig(Section):
    section: ClassVar[str] = "log"

    level: str = field(
        default="info", metadata=Rule(choices=("debug", "info", "warning", "error")).meta
    )
    # auto: JSON lines when stdout is not a terminal, a console renderer when it is.
    format: str = field(default="auto", metadata=Rule(choices=("auto", "json", "console")).meta)


@dataclass(frozen=True)
class Config(Section):
    section: ClassVar[str] = ""

    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    summary: SummaryConfig = field(default_factory=SummaryConfig)
    sources: SourcesConfig = field(default_factory=SourcesConfig)
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)

    spool: SpoolConfig = field(default_factory=SpoolConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    state_dir: Path = field(default_factory=default_state_dir, metadata=_ABSOLUTE_PATH.meta)

    def _check(self) -> None:
        if self.outputs.mqtt_topic is not None and not self.sources.mqtt.host:
            why = "needs sources.mqtt.host (the broker to publish on)"
            raise self.outputs.invalid("mqtt_topic", why)
        self._check_no_feedback_loop()
        if self.sources.zmq_acked and not self.spool.enabled:
            why = "acknowledges lines once spooled: it needs spool.enabled = true"
            raise self.sources.invalid("zmq_acked", why)
        check_exposure(self.zmq_binds(), self.security)
        check_distinct_binds(self.zmq_binds())
        self._check_metrics_exposure()

    def _check_metrics_exposure(self) -> None:
        """/metrics beyond loopback (no authentication on it) only with allow_insecure."""
        metrics = self.metrics
        if not metrics.enabled or is_loopback_host(metrics.host):
            return
        if not self.security.allow_insecure:
            raise metrics.invalid(
                "host",
                "serves /metrics beyond loopback without authentication (anyone who "
                "reaches the port reads the daemon's counters, sources and model); keep "
                "127.0.0.1 and let the scraper in through a tunnel or a proxy, or set "
                "security.allow_insecure = true",
            )

    def _check_no_feedback_loop(self) -> None:
        """Summaries published where the daemon subscribes would come back as stream text:
        it would summarize its own summaries, forever."""
        topic = self.outputs.mqtt_topic
        if topic is None:
            return
        from paho.mqtt.client import topic_matches_sub  # the broker's own matching rules

        for pattern in self.sources.mqtt.topics:
            if topic_matches_sub(pattern, topic):
                why = (
                    f"sources.mqtt.topics subscribes to {pattern!r}, which takes this topic "
                    "in: the daemon would read its own summaries back and summarize them, "
                    "forever. Publish summaries outside the subscribed filters"
                )
                raise self.outputs.invalid("mqtt_topic", why)

    def zmq_binds(self) -> list[Bind]:
        """Every endpoint the daemon binds a ZeroMQ socket to, with its setting."""
        binds = [Bind(self.sources, "zmq_pull", endpoint) for endpoint in self.sources.zmq_pull]
        binds += [Bind(self.sources, "zmq_acked", endpoint) for endpoint in self.acked_binds()]
        if self.outputs.zmq_pub is not None:
            binds.append(Bind(self.outputs, "zmq_pub", self.outputs.zmq_pub))
        return binds

    def acked_binds(self) -> tuple[str, ...]:
        """sources.zmq_acked, or by default ipc://intake.sock beside the control socket:
        a local `streamd send` finds it there, and each daemon (and test) has its own."""
        if self.sources.zmq_acked is not None:
            return self.sources.zmq_acked
        if not self.spool.enabled:  # acknowledged means spooled: without a spool, none
            return ()
        return (f"ipc://{self.control.socket.parent / ACKED_SOCKET_NAME}",)

    def as_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able data (paths as text, lists); secrets are '***' unless redact=False."""
        return as_dict(self, redact)

    def with_overrides(self, overrides: Mapping[str, object]) -> Config:
        """A copy with dotted keys replaced, checked like any load (a live `tune` uses this)."""
        new = given(Config, overrides)
        config: Config = build(Config, flatten(self) | new, dict.fromkeys(new, "the request"))
        return config
