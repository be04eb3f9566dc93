"""ControlClient, and the bodies of the CLI's status, tune, summarize, summaries and
send (the one that talks to the data sockets instead). Each returns the exit code;
cli.py only declares the options. Light on purpose (no torch): every CLI call imports it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import zmq

from ..config import find_control_socket
from ..engine.grounding import top_patterns_text
from .engine_text import doing_text
from .protocol import (
    MAX_REQUEST_BYTES,
    STOPPING_REPLY,
    ControlError,
    DaemonNotAnswering,
    DaemonUnreachable,
    StillRunning,
    decode_reply,
    encode_request,
    endpoint_for,
)
from .status import READY, render_status_table

FOLLOW_WAIT_S = 30.0
# 0 done (status: the daemon is ready), 1 the daemon is unreachable or refused (the
# reason on stderr), 2 a usage or setting error, 3 the daemon answers but is not ready
# (starting or stopping), 4 accepted but still waiting for the engine when --timeout ran
# out (it goes on), 130 interrupted (Ctrl-C).
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_NOT_READY, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
BUSY_STATUS_TIMEOUT_S = 2.0  # the status asked for when a wait ran out, to say why
OnAccepted = Callable[[dict[str, Any]], None]


class ControlClient:
    """A blocking client for the CLI: one DEALER socket, one request at a time."""

    def __init__(self, socket_path: str | Path, timeout_s: float = 5.0) -> None:
        self.path = Path(socket_path)
        self.timeout_s = timeout_s
        self.missed = 0  # summaries follow() could not deliver (they left the daemon's memory)
        self._context = zmq.Context()
        self._socket: zmq.Socket[bytes] | None = None
        self._ids = itertools.count(1)

    def request(
        self,
        cmd: str,
        args: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        on_accepted: OnAccepted | None = None,
    ) -> dict[str, Any]:
        """The command's result; raises ControlError with the daemon's reason,
        StillRunning when the daemon accepted it but the result did not come within the
        timeout, DaemonNotAnswering when something listens but said nothing, and
        DaemonUnreachable when nothing listens. on_accepted gets the daemon's "accepted"
        note (tune, summarize: what the engine is doing) as soon as it comes."""
        request_id = next(self._ids)
        payload = encode_request(cmd, args, request_id)
        if len(payload) > MAX_REQUEST_BYTES:
            raise ControlError(
                f"{cmd}: request too large ({len(payload)} > {MAX_REQUEST_BYTES} bytes)"
            )
        if not self.path.exists():
            raise DaemonUnreachable(self._unreachable())
        sock = self._connected()
        sock.send_multipart([b"", payload])
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        reply = self._receive(sock, request_id, timeout_s, on_accepted)
        if reply.get("ok") is True and isinstance(reply.get("result"), dict):
            return dict(reply["result"])
        if reply.get("ok") is True:
            raise ControlError(f"{cmd}: the daemon's result is not a JSON object")
        raise ControlError(str(reply.get("error", "the daemon refused the request")))

    def follow(self, recent: int = 0, wait_s: float = FOLLOW_WAIT_S) -> Iterator[dict[str, Any]]:
        """Summaries as the daemon emits them, after the last `recent` ones; never ends.
        Raises ControlError("streamd is stopping") when the daemon shuts down, and
        DaemonUnreachable when it is gone."""
        page = self.request("summaries", {"limit": recent})
        while True:
            self.missed += page["missed"]
            yield from page["summaries"]
            args = {"after": page["cursor"], "epoch": page["epoch"], "wait_s": wait_s}
            page = self.request("summaries", args, timeout_s=self.timeout_s + wait_s)

    def _connected(self) -> zmq.Socket[bytes]:
        if self._socket is None:
            self._socket = self._context.socket(zmq.DEALER)
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.connect(endpoint_for(self.path))
        return self._socket

    def _receive(
        self,
        sock: zmq.Socket[bytes],
        request_id: int,
        timeout_s: float,
        on_accepted: OnAccepted | None = None,
    ) -> dict[str, Any]:
        """The reply to `request_id`, skipping late replies to earlier, timed-out requests
        and taking in its "accepted" note on the way."""
        deadline = time.monotonic() + timeout_s
        accepted: dict[str, Any] | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                break
            reply = decode_reply(sock.recv_multipart()[-1])
            if reply.get("id") != request_id:
                continue
            if "accepted" not in reply:
                return reply
            accepted = reply["accepted"] if isinstance(reply["accepted"], dict) else {}
            if on_accepted is not None:
                on_accepted(accepted)
        if accepted is not None:
            raise StillRunning(f"no result within {timeout_s:g} s; it goes on", accepted)
        if self._listening():
            raise DaemonNotAnswering(
                f"streamd on {self.path} took the connection but did not answer within "
                f"{timeout_s:g} s (its event loop may be stalled: see its log), or retry "
                "with a longer --timeout"
            )
        raise DaemonUnreachable(self._unreachable())

    def _listening(self) -> bool:
        """Whether a process listens on the socket file (a connect is accepted): only
        when none does is the daemon "not running"."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except OSError:
                return False
        return True

    def _unreachable(self) -> str:
        return (
            f"no streamd daemon answering on {self.path} "
            "(is it running? see --control-socket / STREAMD_CONTROL_SOCKET)"
        )

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        self._context.term()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the CLI commands ---------------------------------------------------------------------


def _fail(message: str, code: int = EXIT_ERROR) -> int:
    click.echo(f"streamd: {message}", err=True)
    return code


@contextmanager
def _client(socket: Path | None, timeout_s: float) -> Iterator[ControlClient]:
    with ControlClient(find_control_socket(socket), timeout_s) as client:
        yield client


def _request(
    socket: Path | None, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    with _client(socket, timeout_s) as client:
        return client.request(cmd, args)


def _waiting_request(
    socket: Path | None, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 5.0
) -> dict[str, Any]:
    """A command that waits for the engine: says so on stderr when the daemon accepts it
    while the engine is busy with something else."""

    def accepted(note: dict[str, Any]) -> None:
        engine = note.get("engine")
        if isinstance(engine, dict) and engine.get("doing") not in (None, "idle"):
            doing = doing_text(engine)
            click.echo(f"streamd: {cmd} accepted; waiting for the engine ({doing})", err=True)

    with _client(socket, timeout_s) as client:
        return client.request(cmd, args, on_accepted=accepted)


def _busy(socket: Path | None, error: StillRunning, what_next: str) -> int:
    """'busy: summarizing (seconds) for 40 s': what holds the engine now (asked again: the
    accepted note is as old as the request), what happens next, exit 4."""
    engine = error.accepted.get("engine")
    with contextlib.suppress(ControlError):  # else the note will do
        engine = _request(socket, "status", timeout_s=BUSY_STATUS_TIMEOUT_S).get("engine", engine)
    doing = doing_text(engine) if isinstance(engine, dict) else "the engine is busy"
    return _fail(f"busy: {doing}; {error}: {what_next}", EXIT_BUSY)


# --- status ---------------------------------------------------------------------------------


def status(socket: Path | None, as_json: bool) -> int:
    try:
        doc = _request(socket, "status")
    except ControlError as error:  # DaemonUnreachable included
        return _fail(str(error))
    click.echo(json.dumps(doc, indent=2) if as_json else render_status_table(doc))
    if doc.get("state") != READY:
        return _fail(f"the daemon is {doc.get('state')}, not ready", EXIT_NOT_READY)
    return EXIT_OK


# --- tune -----------------------------------------------------------------------------------


def tune(socket: Path | None, as_json: bool, changes: dict[str, Any], timeout_s: float) -> int:
    if not changes:
        message = "give at least one of --max-capacity, --summary-every-tokens, "
        return _fail(message + "--summary-every-seconds (see streamd tune --help)", EXIT_USAGE)
    try:
        result = _waiting_request(socket, "tune", changes, timeout_s)
    except StillRunning as error:
        why = "it will be applied when the engine is free; `streamd status` shows it"
        return _busy(socket, error, f"the tune was accepted and {why}")
    except ControlError as error:
        return _fail(str(error))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return EXIT_OK
    for name, (old, new) in result.get("changed", {}).items():
        click.echo(f"{name}: {old} -> {new}")
    return EXIT_OK


# --- summaries ------------------------------------------------------------------------------


def render_summary(record: dict[str, Any]) -> str:
    """A summary for people: one header line, then the text."""
    ttft = record.get("ttft_s")
    header = (
        f"#{record.get('seq')} {record.get('time')} [{record.get('trigger')}] "
        f"{record.get('stream_tokens')} stream tokens, window "
        f"{record.get('window_first')}..{record.get('window_last')}"
        + (f", TTFT {ttft * 1000:.0f} ms" if isinstance(ttft, int | float) else "")
    )
    patterns = top_patterns_text(record.get("facts"))
    return f"{header}\n{record.get('text') or '(empty)'}\n{patterns}"


def _echo_summary(record: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(record, ensure_ascii=False) if as_json else render_summary(record))


def summarize(socket: Path | None, as_json: bool, timeout_s: float) -> int:
    try:
        record = _waiting_request(socket, "summarize", timeout_s=timeout_s)
    except StillRunning as error:
        why = "the summary goes to the outputs when done (`streamd summaries` shows it)"
        return _busy(socket, error, why)
    except ControlError as error:
        return _fail(str(error))
    _echo_summary(record, as_json)
    return EXIT_OK


def summaries(socket: Path | None, as_json: bool, follow: bool, last: int | None) -> int:
    try:
        if follow:
            return _follow(socket, as_json, last or 0)
        page = _request(socket, "summaries", {"limit": 10 if last is None else last})
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ControlError as error:
        return _fail(str(error))
    for record in page["summaries"]:
        _echo_summary(record, as_json)
    return EXIT_OK


def _follow(socket: Path | None, as_json: bool, last: int) -> int:
    with _client(socket, 5.0) as client:
        try:
            for record in client.follow(recent=last):
                _echo_summary(record, as_json)
        except ControlError as error:
            if isinstance(error, DaemonUnreachable) or STOPPING_REPLY not in str(error):
                raise
            click.echo("streamd: the daemon stopped", err=True)  # a clean end of the feed
        finally:
            if client.missed:
                click.echo(f"streamd: {client.missed} summaries were missed", err=True)
    return EXIT_OK


# --- send -----------------------------------------------------------------------------------


def send(
    connect: str | None,
    topic: str | None,
    broker: dict[str, Any],
    timeout_s: float,
    curve_files: tuple[Path | None, Path | None] = (None, None),
    push: bool = False,
) -> int:
    """Each stdin line to the daemon's acked socket (default: acknowledged once spooled),
    its PULL socket with `push` (at most once), or to an MQTT topic when
    broker["host"] is set (broker: MqttBrokerConfig's fields). curve_files: our key pair
    file and the daemon's public key file, for a daemon whose binds are CURVE servers."""
    from streamd.connectors import (
        ConfigError,
        SendReport,
        send_lines_acked,
        send_lines_mqtt,
        send_lines_zmq,
    )
    from streamd.connectors.mqtt_broker import MqttBrokerConfig
    from streamd.connectors.zmq_security import CurveClientKeys, load_key_pair, load_public_key
    from streamd.connectors.zmq_sources import DEFAULT_PULL_BIND

    secret_file, server_file = curve_files
    if (secret_file is None) != (server_file is None):
        why = "our key pair and the daemon's public key"
        return _fail(f"--curve-secret-key and --curve-server-key go together ({why})", EXIT_USAGE)
    if push and topic is not None:
        return _fail("--push is for ZeroMQ (--connect), not MQTT", EXIT_USAGE)
    if secret_file is not None and topic is not None:
        return _fail("--curve-* keys are for ZeroMQ (--connect), not MQTT", EXIT_USAGE)
    if broker.get("host") is None and topic is not None:
        return _fail("--mqtt-topic needs --mqtt-host (the broker to publish on)", EXIT_USAGE)
    if broker.get("host") is not None and (connect is not None or topic is None):
        why = "--connect is for ZeroMQ" if connect else "--mqtt-topic is missing"
        return _fail(f"give either --connect, or --mqtt-host with --mqtt-topic ({why})", EXIT_USAGE)
    lines = sys.stdin.buffer  # bytes: the daemon's decoder deals with bad UTF-8
    try:
        report: SendReport
        if topic is not None:
            names = {"ca_file": "--mqtt-tls-ca"}  # errors name the option, not the field
            settings = MqttBrokerConfig(**broker, setting_names=names)
            report = send_lines_mqtt(lines, settings, topic, timeout_s)
        else:
            curve = None
            if secret_file is not None and server_file is not None:
                own = load_key_pair("--curve-secret-key", secret_file)
                curve = CurveClientKeys(own, load_public_key("--curve-server-key", server_file))
            if push:
                address = connect or DEFAULT_PULL_BIND
                report = send_lines_zmq(lines, address, timeout_s, curve=curve)
            else:
                address = connect or default_acked_address()
                report = send_lines_acked(lines, address, timeout_s, curve=curve)
    except ConfigError as error:
        return _fail(str(error), EXIT_USAGE)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if not report.ok:
        return _fail(f"send: {report.describe()}")
    return EXIT_OK


def default_acked_address() -> str:
    """The default daemon's acked socket: intake.sock beside the control socket it uses."""
    from ..config import ACKED_SOCKET_NAME, find_control_socket

    return f"ipc://{find_control_socket().parent / ACKED_SOCKET_NAME}"
