"""The daemon's configuration: frozen, typed sections, validated once at the edge.

Where a value comes from, lowest precedence first:

1. the defaults below;
2. a TOML file (default /etc/streamd/streamd.toml; a missing default file is
   fine, a missing file named explicitly is an error);
3. environment variables: ``STREAMD_`` + the dotted key upper-cased, dots
   becoming underscores::

       cache.max_capacity   -> STREAMD_CACHE_MAX_CAPACITY
       sources.mqtt.host    -> STREAMD_SOURCES_MQTT_HOST
       control.socket       -> STREAMD_CONTROL_SOCKET
       state_dir            -> STREAMD_STATE_DIR

   Lists are comma-separated, booleans are true/false/1/0/yes/no/on/off, and
   an empty value sets an optional key to unset (a list to empty);
4. overrides from the command line: a mapping of dotted keys to values (text
   is parsed like an environment value; None means "option not given").

Every error is a ConfigError whose message names the key, the bad value, what
is allowed, and where the value came from:
``cache.max_capacity = -3: must be an integer >= 8 (from STREAMD_CACHE_MAX_CAPACITY)``.
Sections check themselves in __post_init__, so a section built in code (a live
`tune`, a test) obeys the same rules as one read from a file.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import ipaddress
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from streamd.facts.claims import POLICIES
from streamd.facts.records import PROFILES

# About 2M tokens of text: minutes of backlog for a GPU, bounded memory for the host.
QUEUE_MAX_CHARS = 8 * 1024 * 1024

DEFAULT_CONFIG_PATH = Path("/etc/streamd/streamd.toml")
ENV_PREFIX = "STREAMD_"
# STREAMD_* names that are not config keys, so unknown_environment() stays quiet about them.
NOT_CONFIG_KEYS = frozenset({"STREAMD_CONFIG"})
REDACTED = "***"
# sun_path of a Unix socket holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
# What a source does when the ingest queue is full (sources.*backpressure).
BLOCK, DROP_OLDEST = "block", "drop-oldest"
BACKPRESSURE = (BLOCK, DROP_OLDEST)
_SUB_CANNOT_BLOCK = (
    "a SUB socket cannot hold its publishers back (PUB drops, uncounted, what a slow "
    "subscriber leaves unread); use drop-oldest, which counts what it drops"
)
_MQTT_CANNOT_BLOCK = (
    "the MQTT client keeps reading into an unbounded queue of its own while we wait, so "
    "waiting would not hold the broker back; use drop-oldest, which counts what it drops"
)
_ENDPOINT = re.compile(r"^(tcp://[^\s]+:(\d+|\*)|ipc://[^\s]+)$")


class ConfigError(ValueError):
    """A bad configuration value; the message says which key, what is wrong and how to fix it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _rules(
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    choices: tuple[str, ...] = (),
    pattern: str | None = None,
    expect: str = "",
    hint: str = "",
    secret: bool = False,
) -> dict[str, Any]:
    """Field metadata the generic checks read: ranges, choices, a regex, words for the error."""
    return {
        "at_least": at_least,
        "at_most": at_most,
        "choices": choices,
        "pattern": re.compile(pattern) if pattern else None,
        "expect": expect,
        "hint": hint,
        "secret": secret,
    }


# --- where files and sockets go -----------------------------------------------------------


def _first_path(value: str) -> str:
    # systemd joins several RuntimeDirectory=/StateDirectory= entries with ':'.
    return value.split(":", 1)[0]


def control_socket_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a daemon's control socket may be, most specific first.

    $RUNTIME_DIRECTORY (systemd's RuntimeDirectory=), then $XDG_RUNTIME_DIR/streamd
    (a user running `streamd run` by hand), then /run/streamd (the system service
    as seen from an admin's shell, whose XDG_RUNTIME_DIR is their own).
    """
    env = os.environ if environ is None else environ
    dirs = []
    if env.get("RUNTIME_DIRECTORY"):
        dirs.append(Path(_first_path(env["RUNTIME_DIRECTORY"])))
    if env.get("XDG_RUNTIME_DIR"):
        dirs.append(Path(env["XDG_RUNTIME_DIR"]) / "streamd")
    dirs.append(Path("/run/streamd"))
    return list(dict.fromkeys(d / "control.sock" for d in dirs))


def default_control_socket(environ: Mapping[str, str] | None = None) -> Path:
    return control_socket_candidates(environ)[0]


def find_control_socket(
    explicit: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The socket a CLI command should talk to: --control-socket, $STREAMD_CONTROL_SOCKET,
    else the first candidate that exists (else the first candidate, for the error message)."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    if env.get("STREAMD_CONTROL_SOCKET"):
        return Path(env["STREAMD_CONTROL_SOCKET"])
    candidates = control_socket_candidates(env)
    return next((path for path in candidates if path.exists()), candidates[0])


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """$STATE_DIRECTORY (systemd's StateDirectory=), else the XDG/home or /var/lib location."""
    env = os.environ if environ is None else environ
    if env.get("STATE_DIRECTORY"):
        return Path(_first_path(env["STATE_DIRECTORY"]))
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "streamd"
    if os.geteuid() == 0:
        return Path("/var/lib/streamd")
    return Path.home() / ".local" / "state" / "streamd"


def default_client_id(environ: Mapping[str, str] | None = None) -> str:
    """streamd-<host>, plus -gpu<N> when CUDA_VISIBLE_DEVICES names one GPU (streamd@N).

    The id must be stable, for the broker to keep our persistent session across
    restarts, and distinct per daemon, or the broker disconnects one for the other.
    """
    env = os.environ if environ is None else environ
    gpu = env.get("CUDA_VISIBLE_DEVICES", "")
    suffix = f"-gpu{gpu}" if gpu and "," not in gpu else ""
    return f"streamd-{socket.gethostname()}{suffix}"


# --- generic field checks -----------------------------------------------------------------


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """Field types with the string annotations resolved, once per class."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _fields(obj: Any) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(obj)


def _split_optional(hint: Any) -> tuple[bool, Any]:
    """(True, X) for `X | None`, else (False, hint)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return True, args[0]
    return False, hint


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _type_words(base: Any) -> str:
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    if base in words:
        return words[base]
    if base is Path:
        return "a path"
    return "a list of strings"


def _requirement(f: dataclasses.Field[Any], hint: Any) -> str:
    """What a field accepts, in words: 'an integer >= 8', 'one of: auto, cpu'."""
    meta, (optional, base) = f.metadata, _split_optional(hint)
    if meta.get("choices"):
        words = "one of: " + ", ".join(meta["choices"])
    elif meta.get("expect"):
        words = meta["expect"]
    else:
        words = _type_words(base)
        low, high = meta.get("at_least"), meta.get("at_most")
        if low is not None and high is not None:
            words += f" from {_number(low)} to {_number(high)}"
        elif low is not None:
            words += f" >= {_number(low)}"
    if optional:
        words += " (or unset)"
    return words + (f"; {meta['hint']}" if meta.get("hint") else "")


def _number(x: float) -> str:
    return str(int(x)) if x == int(x) else str(x)


def _type_ok(value: Any, base: Any) -> bool:
    if base is float:
        return isinstance(value, float) and value == value and abs(value) != float("inf")
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base in (bool, str, Path):
        return isinstance(value, base)
    return isinstance(value, tuple) and all(isinstance(item, str) and item for item in value)


def _value_ok(value: Any, meta: Mapping[str, Any]) -> bool:
    if meta.get("choices") and value not in meta["choices"]:
        return False
    if meta.get("pattern") and not meta["pattern"].fullmatch(value):
        return False
    if meta.get("at_least") is not None and value < meta["at_least"]:
        return False
    return not (meta.get("at_most") is not None and value > meta["at_most"])


def _shown(value: Any, secret: bool) -> str:
    if secret and value:
        return REDACTED
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(str(value)) if isinstance(value, Path) else repr(value)


class _Section:
    """Mixin: checks every field's type and rules after __init__, then the section's own."""

    section: ClassVar[str]

    def __post_init__(self) -> None:
        for f in _fields(self):
            hint = _hints(type(self))[f.name]
            if not _is_section(hint):
                self._check_field(f, hint)
        self._check()

    def _check_field(self, f: dataclasses.Field[Any], hint: Any) -> None:
        value = getattr(self, f.name)
        optional, base = _split_optional(hint)
        if value is None and optional:
            return
        if not (_type_ok(value, base) and _value_ok(value, f.metadata)):
            raise self._invalid(f.name, "must be " + _requirement(f, hint))

    def _invalid(self, name: str, why: str) -> ConfigError:
        """'cache.chunk = 0: must be ...', the value hidden if it is a secret."""
        key = f"{self.section}.{name}" if self.section else name
        secret = any(f.metadata.get("secret") for f in _fields(self) if f.name == name)
        return ConfigError(f"{key} = {_shown(getattr(self, name), secret)}: {why}", key)

    def _check(self) -> None:
        """Checks that involve several fields; sections override it."""


# --- the sections -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig(_Section):
    section: ClassVar[str] = "model"

    # "default" is the SmolLM2-135M-Instruct GGUF shipped with the package (no download);
    # anything else is a Hugging Face repo id or a local model directory.
    name: str = field(default="default", metadata=_rules(pattern=r".+", expect="a model name"))
    device: str = field(
        default="auto",
        metadata=_rules(
            pattern=r"auto|cpu|cuda(:\d+)?", expect="'auto', 'cpu', 'cuda' or 'cuda:N'"
        ),
    )
    dtype: str = field(
        default="auto", metadata=_rules(choices=("auto", "float32", "float16", "bfloat16"))
    )


@dataclass(frozen=True)
class CacheConfig(_Section):
    section: ClassVar[str] = "cache"

    # Tokens any query sees, pinned prefix + window. 1024 keeps a 135M model fast and
    # well inside its trained context; raise it for bigger models.
    max_capacity: int = field(default=1024, metadata=_rules(at_least=8, at_most=1 << 20))
    # Largest prefill chunk: a bigger chunk is faster per token but adds ring slots.
    chunk: int = field(default=256, metadata=_rules(at_least=1, at_most=1 << 16))
    # The session's instructions, pinned at the start of the cache with the chat header
    # (they are the attention sinks). Empty: the built-in prompt, which frames the
    # stream as untrusted data.
    system_prompt: str = ""


@dataclass(frozen=True)
class SummaryConfig(_Section):
    section: ClassVar[str] = "summary"

    every_tokens: int = field(default=2048, metadata=_rules(at_least=0, hint="0 turns it off"))
    # Only fires if new text arrived since the last summary.
    every_seconds: float = field(default=60.0, metadata=_rules(at_least=0, hint="0 turns it off"))
    max_tokens: int = field(default=128, metadata=_rules(at_least=1, at_most=4096))
    # grounded: the model completes sentences written from mined facts, its claims checked;
    # plain: the bare question and whatever the model writes (a large model on a GPU).
    mode: str = field(default="grounded", metadata=_rules(choices=("grounded", "plain")))
    # What the stream is (the digest and question fit it): decided per window by default.
    profile: str = field(default="auto", metadata=_rules(choices=PROFILES))
    # A model sentence with a claim nothing supports: removed (drop-sentence) or kept and listed.
    unsupported: str = field(default="drop-sentence", metadata=_rules(choices=POLICIES))


@dataclass(frozen=True)
class MqttConfig(_Section):
    """The MQTT broker connection; subscribes when host and topics are set, and also
    carries outputs.mqtt_topic."""

    section: ClassVar[str] = "sources.mqtt"

    host: str | None = None
    port: int = field(default=1883, metadata=_rules(at_least=1, at_most=65535))
    topics: tuple[str, ...] = ()
    client_id: str = field(
        default_factory=default_client_id, metadata=_rules(pattern=r".+", expect="a client id")
    )
    username: str | None = None
    password: str | None = field(default=None, repr=False, metadata=_rules(secret=True))
    tls: bool = False  # implied by tls_ca / tls_cert: TLS against the system CAs
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None  # unset: the key is inside tls_cert
    qos: int = field(default=1, metadata=_rules(at_least=0, at_most=2))
    # When the ingest queue is full. Only drop-oldest works here: see _check.
    backpressure: str = field(default=DROP_OLDEST, metadata=_rules(choices=BACKPRESSURE))

    @property
    def enabled(self) -> bool:
        return bool(self.host and self.topics)

    @property
    def uses_tls(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None

    def _check(self) -> None:
        if self.topics and not self.host:
            raise self._invalid("topics", "needs sources.mqtt.host (the broker to subscribe on)")
        if self.password is not None and not self.username:
            raise self._invalid("password", "needs sources.mqtt.username too")
        if self.tls_key is not None and self.tls_cert is None:
            raise self._invalid("tls_key", "needs sources.mqtt.tls_cert (the client certificate)")
        if self.backpressure == BLOCK:
            raise self._invalid("backpressure", _MQTT_CANNOT_BLOCK)


def _check_endpoints(section: _Section, name: str) -> None:
    endpoints = getattr(section, name)
    if any(
        not _ENDPOINT.match(e) for e in ([endpoints] if isinstance(endpoints, str) else endpoints)
    ):
        raise section._invalid(name, "must be ZeroMQ endpoints: tcp://HOST:PORT or ipc:///PATH")


@dataclass(frozen=True)
class SourcesConfig(_Section):
    section: ClassVar[str] = "sources"

    # Loopback by default: a bind on another interface exposes an unauthenticated socket.
    zmq_pull: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    zmq_sub: tuple[str, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    # When the ingest queue is full. block: PULL stops reading, so senders wait and nothing
    # is lost; drop-oldest: the oldest queued lines make room, so the freshest win.
    zmq_pull_backpressure: str = field(default=BLOCK, metadata=_rules(choices=BACKPRESSURE))
    # Only drop-oldest works for SUB: see _check.
    zmq_sub_backpressure: str = field(default=DROP_OLDEST, metadata=_rules(choices=BACKPRESSURE))

    def _check(self) -> None:
        _check_endpoints(self, "zmq_pull")
        _check_endpoints(self, "zmq_sub")
        if self.zmq_sub_backpressure == BLOCK:
            raise self._invalid("zmq_sub_backpressure", _SUB_CANNOT_BLOCK)


@dataclass(frozen=True)
class IngestConfig(_Section):
    section: ClassVar[str] = "ingest"

    # The queue between the sources and the model, in characters of text (about 4 a token).
    queue_max_chars: int = field(default=QUEUE_MAX_CHARS, metadata=_rules(at_least=1024))


@dataclass(frozen=True)
class OutputsConfig(_Section):
    section: ClassVar[str] = "outputs"

    stdout: bool = True
    jsonl: Path | None = None  # append-only, one JSON object per summary
    zmq_pub: str | None = None  # bind endpoint
    # Published QoS 1, retained, through the sources.mqtt broker connection.
    mqtt_topic: str | None = field(
        default=None, metadata=_rules(pattern=r"[^+#\x00]+", expect="a topic without + or #")
    )

    def _check(self) -> None:
        if self.zmq_pub is not None:
            _check_endpoints(self, "zmq_pub")


@dataclass(frozen=True)
class ControlConfig(_Section):
    section: ClassVar[str] = "control"

    socket: Path = field(default_factory=default_control_socket)

    def _check(self) -> None:
        if not self.socket.is_absolute():
            raise self._invalid("socket", "must be an absolute path")
        if len(os.fsencode(self.socket)) > MAX_SOCKET_PATH_BYTES:
            limit = MAX_SOCKET_PATH_BYTES
            raise self._invalid(
                "socket", f"must be at most {limit} bytes long (a Unix socket limit)"
            )


@dataclass(frozen=True)
class MetricsConfig(_Section):
    section: ClassVar[str] = "metrics"

    host: str = field(default="127.0.0.1", metadata=_rules(pattern=r".+", expect="a host"))
    # 9464 is the port OpenTelemetry's Prometheus exporter uses by convention.
    port: int = field(
        default=9464, metadata=_rules(at_least=0, at_most=65535, hint="0 turns it off")
    )

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True)
class LogConfig(_Section):
    section: ClassVar[str] = "log"

    level: str = field(
        default="info", metadata=_rules(choices=("debug", "info", "warning", "error"))
    )
    # auto: JSON lines when stdout is not a terminal, a console renderer when it is.
    format: str = field(default="auto", metadata=_rules(choices=("auto", "json", "console")))


@dataclass(frozen=True)
class SnapshotConfig(_Section):
    """Session snapshots in state_dir: a restarted daemon re-reads the window it had."""

    section: ClassVar[str] = "snapshot"

    # Off: no snapshot is written and none is resumed at start.
    enabled: bool = True
    # A snapshot is a JSON file of the window's token ids (a few bytes a token), written
    # only if the stream moved: a minute of text is what a crash may lose.
    every_seconds: float = field(
        default=60.0, metadata=_rules(at_least=0, hint="0: only at shutdown")
    )


@dataclass(frozen=True)
class SecurityConfig(_Section):
    """Who may use streamd's ZeroMQ sockets. (The control socket is a file in the runtime
    directory, mode 0660; there is no TCP control endpoint.)"""

    section: ClassVar[str] = "security"

    # The daemon's CURVE key pair, the NAME.key_secret file of zmq.auth.create_certificates.
    # With the folder below, every ZeroMQ bind (sources.zmq_pull, outputs.zmq_pub) is a
    # CURVE server; with zmq_sub_server_key, sources.zmq_sub connects as a CURVE client.
    zmq_curve_secret_key_file: Path | None = None
    # A folder of the public NAME.key files of the clients that may connect; nobody else can.
    zmq_curve_authorized_keys: Path | None = None
    # The public key file of the publishers that sources.zmq_sub connects to.
    zmq_sub_server_key: Path | None = None
    # A bind beyond loopback without CURVE is refused at start unless this says, in so
    # many words, that anyone who reaches the port may feed the session.
    allow_insecure: bool = False

    @property
    def curve_server(self) -> bool:
        """Binds are CURVE servers: the key pair and the authorized keys are both given."""
        return self.zmq_curve_authorized_keys is not None

    def _check(self) -> None:
        need_pair = "needs security.zmq_curve_secret_key_file (the daemon's own key pair)"
        if self.zmq_curve_secret_key_file is None:
            for name in ("zmq_curve_authorized_keys", "zmq_sub_server_key"):
                if getattr(self, name) is not None:
                    raise self._invalid(name, need_pair)
        elif not self.curve_server and self.zmq_sub_server_key is None:
            why = (
                "does nothing alone: add security.zmq_curve_authorized_keys (CURVE on "
                "binds) or security.zmq_sub_server_key (CURVE on sources.zmq_sub)"
            )
            raise self._invalid("zmq_curve_secret_key_file", why)


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ipc:// and inproc:// and for tcp:// on 127.0.0.0/8, ::1 or localhost;
    `tcp://*`, 0.0.0.0, interface names and other hosts reach beyond this machine."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # *, an interface name, a host name
        return False


def zmq_binds(config: Config) -> list[tuple[_Section, str, str]]:
    """Every endpoint the daemon binds a ZeroMQ socket to: (section, setting, endpoint)."""
    binds: list[tuple[_Section, str, str]] = [
        (config.sources, "zmq_pull", endpoint) for endpoint in config.sources.zmq_pull
    ]
    if config.outputs.zmq_pub is not None:
        binds.append((config.outputs, "zmq_pub", config.outputs.zmq_pub))
    return binds


def _check_exposed_binds(config: Config) -> None:
    """A bind beyond loopback needs CURVE, or allow_insecure said in so many words."""
    security = config.security
    if security.curve_server or security.allow_insecure:
        return
    for section, name, endpoint in zmq_binds(config):
        if not is_loopback_endpoint(endpoint):
            raise section._invalid(
                name,
                f"{endpoint} listens beyond loopback without authentication (anyone who "
                "reaches the port could use it); configure CURVE keys "
                "(security.zmq_curve_secret_key_file and security.zmq_curve_authorized_keys)"
                ", or set security.allow_insecure = true",
            )


@dataclass(frozen=True)
class Config(_Section):
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
    security: SecurityConfig = field(default_factory=SecurityConfig)
    state_dir: Path = field(default_factory=default_state_dir)

    def _check(self) -> None:
        if not self.state_dir.is_absolute():
            raise self._invalid("state_dir", "must be an absolute path")
        if self.outputs.mqtt_topic is not None and not self.sources.mqtt.host:
            why = "needs sources.mqtt.host (the broker to publish on)"
            raise self.outputs._invalid("mqtt_topic", why)
        _check_exposed_binds(self)

    def as_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able data (paths as text, lists); secrets are '***' unless redact=False."""
        return _as_dict(self, redact)

    def with_overrides(self, overrides: Mapping[str, object]) -> Config:
        """A copy with dotted keys replaced, checked like any load (a live `tune` uses this)."""
        flat = dict(_flatten_section(self))
        origins: dict[str, str] = {}
        _merge(flat, origins, _from_overrides(overrides), "the request")
        return _build_config(flat, origins)


def _as_dict(section: Any, redact: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in _fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            value = _as_dict(value, redact)
        elif f.metadata.get("secret") and redact and value:
            value = REDACTED
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def _flatten_section(section: Any, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            flat.update(_flatten_section(value, f"{prefix}{f.name}."))
        else:
            flat[prefix + f.name] = value
    return flat


# --- the key table ------------------------------------------------------------------------


@functools.cache
def config_keys() -> dict[str, Any]:
    """Every dotted key and its type: {'cache.max_capacity': int, ...}."""
    return _leaf_hints(Config, "")


def _leaf_hints(cls: type, prefix: str) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint = _hints(cls)[f.name]
        if _is_section(hint):
            keys.update(_leaf_hints(hint, f"{prefix}{f.name}."))
        else:
            keys[prefix + f.name] = hint
    return keys


def env_var_for(key: str) -> str:
    """The environment variable that overrides a dotted key: cache.max_capacity ->
    STREAMD_CACHE_MAX_CAPACITY."""
    return ENV_PREFIX + key.replace(".", "_").upper()


@functools.cache
def _env_table() -> dict[str, str]:
    return {env_var_for(key): key for key in config_keys()}


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """STREAMD_* variables that name no key (typos the service should warn about)."""
    env = os.environ if environ is None else environ
    return sorted(
        name
        for name in env
        if name.startswith(ENV_PREFIX) and name not in _env_table() and name not in NOT_CONFIG_KEYS
    )


# --- loading ------------------------------------------------------------------------------


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> Config:
    """Defaults < TOML file < STREAMD_* environment < overrides; raises ConfigError."""
    env = os.environ if environ is None else environ
    flat: dict[str, Any] = {
        "control.socket": default_control_socket(env),
        "state_dir": default_state_dir(env),
        "sources.mqtt.client_id": default_client_id(env),
    }
    origins: dict[str, str] = {}
    file_path = DEFAULT_CONFIG_PATH if path is None else Path(path)
    if path is not None or file_path.exists():
        _merge(flat, origins, _read_toml(file_path), str(file_path))
    for name, value in env.items():
        if name in _env_table():
            _merge(flat, origins, {_env_table()[name]: value}, name)
    _merge(flat, origins, _from_overrides(overrides or {}), "the command line")
    return _build_config(flat, origins)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            table = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist (see --config)") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return _flatten_table(table, "", path)


def _flatten_table(table: Mapping[str, Any], prefix: str, path: Path) -> dict[str, Any]:
    """{'cache': {'chunk': 4}} -> {'cache.chunk': 4}, refusing keys that are not ours."""
    flat: dict[str, Any] = {}
    sections = {key.rsplit(".", 1)[0] for key in config_keys() if "." in key}
    for name, value in table.items():
        key = prefix + name
        if key in sections:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{key} in {path} must be a table: [{key}]", key)
            flat.update(_flatten_table(value, key + ".", path))
        elif key in config_keys():
            flat[key] = value
        else:
            raise _unknown_key(key, prefix, path)
    return flat


def _unknown_key(key: str, prefix: str, path: Path) -> ConfigError:
    siblings = sorted(k[len(prefix) :].split(".")[0] for k in config_keys() if k.startswith(prefix))
    known = ", ".join(dict.fromkeys(siblings))
    close = difflib.get_close_matches(key[len(prefix) :], siblings, n=1)
    guess = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    where = f"[{prefix[:-1]}]" if prefix else "the top level"
    return ConfigError(f"unknown key '{key}' in {path}{guess}; known keys in {where}: {known}", key)


def _from_overrides(overrides: Mapping[str, object]) -> dict[str, object]:
    unknown = [key for key in overrides if key not in config_keys()]
    if unknown:
        raise ConfigError(
            f"unknown config key '{unknown[0]}'; known keys: {', '.join(config_keys())}",
            unknown[0],
        )
    # None (and an empty tuple, what click gives for a repeatable option) means "not given".
    return {key: value for key, value in overrides.items() if value not in (None, (), [])}


def _merge(
    flat: dict[str, Any], origins: dict[str, str], new: Mapping[str, Any], where: str
) -> None:
    for key, value in new.items():
        flat[key] = value
        origins[key] = where


def _build_config(flat: Mapping[str, Any], origins: Mapping[str, str]) -> Config:
    try:
        return _build(Config, flat, "")
    except ConfigError as e:
        where = origins.get(e.key or "")
        if where is None:
            raise
        raise ConfigError(f"{e} (from {where})", e.key) from None


def _build(cls: type, flat: Mapping[str, Any], prefix: str) -> Any:
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        hint, key = _hints(cls)[f.name], prefix + f.name
        if _is_section(hint):
            kwargs[f.name] = _build(hint, flat, key + ".")
        elif key in flat:
            kwargs[f.name] = _coerce(flat[key], hint)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any) -> Any:
    """Bring a TOML / environment / CLI value to the field's type where that is unambiguous;
    anything else is left as it is for the section's check to refuse in words."""
    optional, base = _split_optional(hint)
    if isinstance(value, str) and base is not str:
        if value == "" and optional:
            return None
        return _parse_text(value, base)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base not in (int, float, bool, str, Path) and isinstance(value, list | tuple):
        return tuple(value)
    return value


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}


def _parse_text(text: str, base: Any) -> Any:
    try:
        if base is bool:
            return _BOOLEANS.get(text.strip().lower(), text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        return text
    if base is Path:
        return Path(text)
    return tuple(item.strip() for item in text.split(",") if item.strip())
