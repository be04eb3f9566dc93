"""`streamd run`'s options: one per config key, turned into load_config's overrides.

The table below is the only place an option meets its key. click parses no
values itself (everything is text, flags aside): load_config checks each the
way it checks the TOML file and the environment, so one set of rules and
messages covers all three, and an error names the option that was given.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from .config import Config, ConfigError, config_keys, env_var_for, load_config

F = TypeVar("F", bound=Callable[..., Any])

COMMAND_LINE = "(from the command line)"  # how load_config names our overrides


@dataclass(frozen=True)
class RunOption:
    flags: str  # "--max-capacity", or "--stdout/--no-stdout" for a boolean key
    key: str  # the config key it overrides
    help: str
    metavar: str | None = None
    multiple: bool = False  # repeatable; a list key

    @property
    def param(self) -> str:
        """click's parameter name: the key, as an identifier."""
        return self.key.replace(".", "_")

    @property
    def flag(self) -> str:
        return self.flags.split("/")[0]


RUN_OPTIONS = (
    RunOption("--model", "model.name", "'default' (SmolLM2-135M-Instruct, shipped with streamd), a "
              "local model directory, or a Hugging Face id in the local cache.", "NAME"),
    RunOption("--device", "model.device", "auto, cpu, cuda or cuda:N.", "DEVICE"),
    RunOption("--dtype", "model.dtype", "auto (bfloat16 on a GPU; on a CPU with native bf16, "
              "AVX512-BF16 or AMX, int4; else float32), int4 (bfloat16, and int4 copies of the "
              "weights for writing summaries: a CPU decodes 2-3x faster), float32, float16 or "
              "bfloat16.", "DTYPE"),
    RunOption("--threads", "model.threads", "CPU threads for the model's matmuls. 0: one per "
              "core. On a machine shared with other busy work, fewer leave it room: processes "
              "fighting over the same cores can each slow down several times.", "N"),
    RunOption("--max-capacity", "cache.max_capacity", "Tokens the model sees at once: the pinned "
              "prefix plus the sliding window. It fixes the cache's memory; `streamd tune "
              "--max-capacity` changes it live.", "N"),
    RunOption("--chunk", "cache.chunk", "Largest prefill chunk, in tokens per forward pass.", "N"),
    RunOption("--refresh", "cache.refresh", "How often the window's keys and values are "
              "recomputed from its own tokens, closer to a fresh forward over it: auto (twice "
              "per window streamed, ~3x the ingest compute; on a CPU only where max_capacity "
              "<= 512), off, or every N stream tokens.", "auto|off|N"),
    RunOption("--system-prompt", "cache.system_prompt", "The session's instructions, pinned at "
              "the start of the cache. Empty: the built-in prompt.", "TEXT"),
    RunOption("--summary-every-tokens", "summary.every_tokens", "Summarize after this many new "
              "stream tokens (0: never).", "N"),
    RunOption("--summary-every-seconds", "summary.every_seconds", "Summarize every S seconds, if "
              "new text arrived (0: never).", "S"),
    RunOption("--summary-max-tokens", "summary.max_tokens", "Longest summary, in tokens.", "N"),
    RunOption("--summary-max-seconds", "summary.max_seconds", "Time budget of one summary: "
              "past it the model stops and the summary ends at its last whole sentence (0: no "
              "limit; the token budget still holds).", "S"),
    RunOption("--summary-share", "engine.summary_share", "While text waits in the queue, "
              "summaries from the tokens and seconds triggers take at most this share of the "
              "engine's time (after a summary of d seconds ingest gets d*(1-share)/share "
              "first); 1: no limit.", "SHARE"),
    RunOption("--max-lag-seconds", "engine.max_lag_seconds", "`status` says the daemon falls "
              "behind once the oldest unread message has waited longer than this.", "S"),
    RunOption("--shutdown-timeout", "shutdown.timeout_seconds", "SIGTERM to exit, at most: "
              "a running summary is cut short, queued text drained, a final summary and a "
              "snapshot written within it. Keep it under systemd's TimeoutStopSec.", "S"),
    RunOption("--final-summary-seconds", "shutdown.final_summary_seconds", "Time limit of "
              "the final summary at shutdown, within --shutdown-timeout (0: none, logged).",
              "S"),
    RunOption("--summary-mode", "summary.mode", "grounded (the model completes sentences "
              "written from exact facts mined from the lines; its claims are checked) or plain "
              "(the bare question, unchecked).", "MODE"),
    RunOption("--profile", "summary.profile", "What the stream is: logs (templates, counts, "
              "entities), transcript (speakers, terms), or auto (decided per window).", "KIND"),
    RunOption("--summary-unsupported", "summary.unsupported", "A sentence of the model with a "
              "claim (IP, number, name, path, quote, date) that neither the window text nor the "
              "facts support: drop-sentence (removed) or flag (kept, listed in the record).",
              "POLICY"),
    RunOption("--zmq-bind", "sources.zmq_pull", "Bind a ZeroMQ PULL socket here for `streamd "
              "send` (repeatable; replaces the default).", "ADDR", multiple=True),
    RunOption("--zmq-acked-bind", "sources.zmq_acked", "Bind a ZeroMQ ROUTER socket here for "
              "acknowledged delivery: `streamd send` keeps each line until the daemon has "
              "spooled it, and resends it after a restart (repeatable; unset: ipc://intake.sock "
              "beside the control socket).", "ADDR", multiple=True),
    RunOption("--zmq-sub", "sources.zmq_sub", "Connect a ZeroMQ SUB socket to this publisher "
              "(repeatable).", "ADDR", multiple=True),
    RunOption("--zmq-pull-backpressure", "sources.zmq_pull_backpressure", "When the ingest "
              "queue is full: block (senders wait, nothing is lost) or drop-oldest (the "
              "freshest lines win; drops are counted).", "POLICY"),
    RunOption("--zmq-sub-backpressure", "sources.zmq_sub_backpressure", "drop-oldest, the only "
              "policy a SUB socket can have (publishers do not wait).", "POLICY"),
    RunOption("--mqtt-host", "sources.mqtt.host", "MQTT broker: subscribe to --mqtt-topic, "
              "publish to --mqtt-summary-topic.", "HOST"),
    RunOption("--mqtt-port", "sources.mqtt.port", "MQTT broker port (8883 is the usual TLS "
              "port).", "PORT"),
    RunOption("--mqtt-topic", "sources.mqtt.topics", "MQTT topic filter to read text from, e.g. "
              "logs/# (repeatable).", "FILTER", multiple=True),
    RunOption("--mqtt-client-id", "sources.mqtt.client_id", "Fixed and unique per daemon: the "
              "broker keeps what is published while streamd is away under this id.", "ID"),
    RunOption("--mqtt-username", "sources.mqtt.username", "MQTT user name.", "USER"),
    RunOption("--mqtt-password", "sources.mqtt.password", "MQTT password. Other users see "
              "command lines (ps): prefer the environment variable.", "PASSWORD"),
    RunOption("--mqtt-tls/--no-mqtt-tls", "sources.mqtt.tls", "TLS to the broker, checked "
              "against the system CAs (implied by --mqtt-tls-ca and --mqtt-tls-cert)."),
    RunOption("--mqtt-tls-ca", "sources.mqtt.tls_ca", "Trust this CA (PEM) for the broker.",
              "PATH"),
    RunOption("--mqtt-tls-cert", "sources.mqtt.tls_cert", "Client certificate (PEM) for "
              "brokers that ask for one.", "PATH"),
    RunOption("--mqtt-tls-key", "sources.mqtt.tls_key", "Its key, if not inside the "
              "certificate file.", "PATH"),
    RunOption("--mqtt-qos", "sources.mqtt.qos", "Subscription QoS: 0, 1 or 2.", "N"),
    RunOption("--mqtt-backpressure", "sources.mqtt.backpressure", "drop-oldest, the only "
              "policy MQTT can have (the client reads on while we wait).", "POLICY"),
    RunOption("--queue-max-chars", "ingest.queue_max_chars", "Bound of the ingest queue "
              "between the sources and the model, in characters.", "N"),
    RunOption("--max-tokens-per-char", "ingest.max_tokens_per_char", "Reject a message with "
              "more tokens than this per character (combining marks not counted; 256 tokens "
              "of slack) as token_heavy: stacked combining marks cost a token a byte. 0: "
              "off.", "X"),


    RunOption("--spool/--no-spool", "spool.enabled", "Append what sources hand over to a spool "
              "in the state directory before it counts as received, and replay it at start: "
              "a restart or a crash loses nothing received."),
    RunOption("--spool-max-bytes", "spool.max_bytes", "Bound of the spool's files. When full, "
              "block sources wait for room (a snapshot trims the spool); drop-oldest sources "
              "drop new messages, counted as spool_full.", "BYTES"),
    RunOption("--spool-sync-every-seconds", "spool.sync_every_seconds", "fsync the spool at "
              "least this often (acknowledged lines are fsynced before they are "
              "acknowledged).", "S"),
    RunOption("--stdout/--no-stdout", "outputs.stdout", "Write each summary as a JSON line on "
              "stdout."),
    RunOption("--jsonl", "outputs.jsonl", "Append each summary to this JSONL file, fsynced.",
              "PATH"),
    RunOption("--zmq-pub", "outputs.zmq_pub", "Bind a ZeroMQ PUB socket here and publish each "
              "summary.", "ADDR"),
    RunOption("--mqtt-summary-topic", "outputs.mqtt_topic", "Publish each summary to this MQTT "
              "topic on --mqtt-host (QoS 1, the latest retained).", "TOPIC"),
    RunOption("--zmq-curve-secret-key", "security.zmq_curve_secret_key_file", "The daemon's "
              "CURVE key pair (a NAME.key_secret file of zmq.auth.create_certificates).", "PATH"),
    RunOption("--zmq-curve-authorized-keys", "security.zmq_curve_authorized_keys", "A folder "
              "of the clients' public NAME.key files: every ZeroMQ bind becomes a CURVE server "
              "that lets only them in.", "DIR"),
    RunOption("--zmq-sub-server-key", "security.zmq_sub_server_key", "The publishers' public "
              "key file: --zmq-sub connects with CURVE.", "PATH"),
    RunOption("--allow-insecure/--no-allow-insecure", "security.allow_insecure", "Let a ZeroMQ "
              "bind beyond loopback go without CURVE: anyone who reaches it can feed the "
              "session."),
    RunOption("--control-socket", "control.socket", "The socket that `streamd status`, `tune`, "
              "`summarize` and `summaries` talk to.", "PATH"),
    RunOption("--metrics-host", "metrics.host", "Prometheus endpoint address.", "HOST"),
    RunOption("--metrics-port", "metrics.port", "Prometheus endpoint port, "
              "http://HOST:PORT/metrics (0: off).", "PORT"),
    RunOption("--log-level", "log.level", "debug, info, warning or error.", "LEVEL"),
    RunOption("--log-format", "log.format", "auto (JSON lines unless stdout is a terminal), json "
              "or console.", "FORMAT"),
    RunOption("--state-dir", "state_dir", "Where streamd keeps its state.", "PATH"),
    RunOption("--snapshot/--no-snapshot", "snapshot.enabled", "Snapshot the session into the "
              "state directory and resume from it at start."),
    RunOption("--snapshot-every-seconds", "snapshot.every_seconds", "Seconds between snapshots, "
              "taken only if the stream moved (0: only at shutdown).", "S"),
)  # fmt: skip


def _flat_defaults(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in section.items():
        if isinstance(value, Mapping):
            flat.update(_flat_defaults(value, f"{prefix}{name}."))
        else:
            flat[prefix + name] = value
    return flat


def _shown_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value) or "none"
    return "unset" if value in (None, "") else str(value)


def _help(option: RunOption, defaults: Mapping[str, Any]) -> str:
    default = _shown_default(defaults[option.key])
    return f"{option.help} [default: {default}; {option.key}; ${env_var_for(option.key)}]"


def run_options(command: F) -> F:
    """Decorate `command` with every RUN_OPTIONS entry; none has a default of its own
    (None: not given, so the file and the environment decide)."""
    defaults = _flat_defaults(Config().as_dict())
    for option in reversed(RUN_OPTIONS):
        command = click.option(
            *option.flags.split(" "),
            option.param,
            default=None,
            multiple=option.multiple,
            metavar=option.metavar,
            help=_help(option, defaults),
        )(command)
    return command


def overrides_from(options: Mapping[str, Any]) -> dict[str, Any]:
    """click's values -> {config key: value}, the options not given left out."""
    given = {o.key: options.get(o.param) for o in RUN_OPTIONS}
    return {key: value for key, value in given.items() if value not in (None, ())}


@functools.cache
def _flag_for_key() -> dict[str, str]:
    return {option.key: option.flag for option in RUN_OPTIONS}


def load_run_config(config_path: Path | None, options: Mapping[str, Any]) -> Config:
    """load_config with the options as overrides; a ConfigError names the option given."""
    overrides = overrides_from(options)
    try:
        return load_config(config_path, overrides=overrides)
    except ConfigError as error:
        flag = _flag_for_key().get(error.key or "")
        if flag and error.key in overrides and str(error).endswith(COMMAND_LINE):
            message = str(error).removesuffix(COMMAND_LINE) + f"(from {flag})"
            raise ConfigError(message, error.key) from None
        raise


def missing_keys() -> list[str]:
    """Config keys no option covers (a test keeps this empty)."""
    covered = {option.key for option in RUN_OPTIONS}
    return [key for key in config_keys() if key not in covered]
