"""The control protocol: versioned JSON over a ZeroMQ ROUTER on an ipc:// socket.

A request is one ZeroMQ frame of UTF-8 JSON, at most MAX_REQUEST_BYTES::

    {"v": 1, "cmd": "status", "args": {}, "id": 7}

    v     protocol version; this module speaks 1
    cmd   one of COMMANDS
    args  an object (optional, default {})
    id    a string or integer (optional), echoed in the reply

and every request gets exactly one reply, also one frame::

    {"v": 1, "id": 7, "ok": true, "result": {...}}
    {"v": 1, "id": 7, "ok": false, "error": "what was wrong, in words"}

Malformed, oversized or unknown requests get an error reply; nothing a client
sends can stop the server. The commands (the service's handler implements all
but ping):

    ping       {}                                  -> {"pong": true}  (the server answers)
    status     {}                                  -> the status document
    tune       {"max_capacity"?, "summary_every_tokens"?, "summary_every_seconds"?}
                                                   -> {"changed": {key: [old, new]}}
    summarize  {}                                  -> one summary
    summaries  {"after"?, "epoch"?, "wait_s"?, "limit"?}
                                                   -> {"epoch", "cursor", "missed", "summaries"}

Following summaries is a long poll on this same socket (SummaryFeed): no second
socket to secure, and no summary is lost between polls the way a late PUB/SUB
subscriber loses the first messages. `summaries` without "after" returns the
last `limit` (default 10) summaries at once; with "after": N it waits up to
wait_s seconds for summaries numbered above N and returns them with the new
cursor. "epoch" identifies one run of the daemon: after a restart the
numbering starts again, and a client whose epoch is stale gets everything the
new run has kept. ControlClient.follow() wraps the loop.

The socket file is made mode 0660 right after bind, inside a directory the
server creates 0750 (under systemd, RuntimeDirectoryMode=0750 already did).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import zmq
import zmq.asyncio

log = structlog.get_logger(__name__)

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
# Frames above this are cut off by libzmq itself (the peer is disconnected) so that a
# huge frame is never buffered; between the two limits the client gets an error reply.
HARD_FRAME_LIMIT = 1024 * 1024
COMMANDS = ("ping", "status", "tune", "summarize", "summaries")
REQUEST_FIELDS = ("v", "cmd", "args", "id")
MAX_ID_CHARS = 128
MAX_IN_FLIGHT = 64  # concurrent requests, long polls included
SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
CLOSE_LINGER_MS = 200  # time for the last replies ("streamd is stopping") to leave
PROBE_TIMEOUT_S = 0.3  # how long start() waits to see whether another daemon owns the socket
MAX_WAIT_S = 60.0  # longest long poll a client may ask for
FOLLOW_WAIT_S = 30.0
RECENT_DEFAULT = 10  # summaries `summaries` returns without "after" or "limit"

# `tune` arguments and the config keys they change: the service applies them with
# Config.with_overrides, whose errors then name the key and the allowed values.
TUNE_KEYS = {
    "max_capacity": "cache.max_capacity",
    "summary_every_tokens": "summary.every_tokens",
    "summary_every_seconds": "summary.every_seconds",
}

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
RequestId = str | int | None


class ControlError(Exception):
    """A refused request; the message is what the client is told. Handlers raise it."""


class ProtocolError(ControlError):
    """A request that is not valid protocol (not JSON, too big, unknown command...)."""

    def __init__(self, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class DaemonUnreachable(ControlError):
    """No daemon answered on the socket in time."""


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any]
    id: RequestId = None


def endpoint_for(socket_path: Path) -> str:
    return f"ipc://{socket_path}"


# --- the wire format ----------------------------------------------------------------------


def encode_request(
    cmd: str, args: dict[str, Any] | None = None, request_id: RequestId = None
) -> bytes:
    request: dict[str, Any] = {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args or {}}
    if request_id is not None:
        request["id"] = request_id
    return json.dumps(request, allow_nan=False).encode()


def encode_reply(request_id: RequestId, *, result: Any = None, error: str | None = None) -> bytes:
    """A reply frame; raises TypeError/ValueError if `result` is not strict JSON."""
    reply: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if request_id is not None:
        reply["id"] = request_id
    if error is None:
        reply |= {"ok": True, "result": result}
    else:
        reply |= {"ok": False, "error": error}
    # allow_nan=False: NaN/Infinity are not JSON, and `streamd status --json | jq` must work.
    return json.dumps(reply, allow_nan=False).encode()


def parse_request(frame: bytes) -> Request:
    """Check one request frame against the protocol; raises ProtocolError saying why not."""
    if len(frame) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            f"request of {len(frame)} bytes is over the {MAX_REQUEST_BYTES}-byte limit"
        )
    try:
        request = json.loads(frame.decode("utf-8"))
    except UnicodeDecodeError:
        raise ProtocolError("request is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise ProtocolError(f"request is not JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("request is nested too deeply") from None
    if not isinstance(request, dict):
        raise ProtocolError("request must be a JSON object")
    request_id = _request_id(request)
    return Request(_command(request, request_id), _arguments(request, request_id), request_id)


def _request_id(request: dict[str, Any]) -> RequestId:
    request_id = request.get("id")
    is_int = isinstance(request_id, int) and not isinstance(request_id, bool)
    if (
        request_id is None
        or is_int
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
    ):
        return request_id
    raise ProtocolError(f"id must be an integer or a string of at most {MAX_ID_CHARS} characters")


def _command(request: dict[str, Any], request_id: RequestId) -> str:
    unknown = sorted(set(request) - set(REQUEST_FIELDS))
    if unknown:
        raise ProtocolError(
            f"unknown request fields: {', '.join(unknown)}; allowed: {', '.join(REQUEST_FIELDS)}",
            request_id,
        )
    if request.get("v") != PROTOCOL_VERSION or isinstance(request.get("v"), bool):
        raise ProtocolError(
            f"unsupported protocol version v={request.get('v')!r}; this daemon speaks v=1",
            request_id,
        )
    cmd = request.get("cmd")
    if cmd not in COMMANDS:
        shown = repr(cmd)[:64]
        raise ProtocolError(f"unknown command {shown}; commands: {', '.join(COMMANDS)}", request_id)
    return str(cmd)


def _arguments(request: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("args must be a JSON object", request_id)
    return args


def check_args(cmd: str, args: dict[str, Any], known: Iterable[str]) -> None:
    """Refuse arguments a command does not take (handlers call it first)."""
    allowed = sorted(known)
    unknown = sorted(set(args) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no arguments"
        raise ControlError(f"{cmd}: unknown argument '{unknown[0]}'; {cmd} takes {takes}")


# --- the server ---------------------------------------------------------------------------


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (routing envelope to send back, body). REQ and DEALER clients put
    an empty delimiter frame after their identity; a bare DEALER may not."""
    if b"" in frames[1:]:
        cut = len(frames) - frames[::-1].index(b"")
        return frames[:cut], frames[cut:]
    return frames[:1], frames[1:]


class ControlServer:
    """Answers control requests on ipc://<socket_path>, one asyncio task per request.

    `handler(cmd, args)` returns the result object or raises ControlError; any
    other exception is logged and answered as an internal error.
    """

    def __init__(
        self,
        socket_path: str | Path,
        handler: Handler,
        *,
        context: zmq.asyncio.Context | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.path = Path(socket_path)
        self.endpoint = endpoint_for(self.path)
        self._handler = handler
        self._own_context = context is None
        self._context = zmq.asyncio.Context() if context is None else context
        self._max_in_flight = max_in_flight
        self._socket: zmq.asyncio.Socket | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._in_flight: dict[asyncio.Task[None], tuple[list[bytes], Request]] = {}

    async def start(self) -> None:
        """Bind, or raise ControlError if that fails or another daemon answers on the path."""
        try:
            await self._claim_path()
            self._socket = self._bind()
        except BaseException:
            self._release_context()
            raise
        self._receiver = asyncio.create_task(self._receive_loop(self._socket))
        log.info("control socket listening", path=str(self.path))

    def _bind(self) -> zmq.asyncio.Socket:
        try:
            self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        except OSError as e:
            raise ControlError(f"cannot create {self.path.parent}: {e.strerror}") from e
        sock = self._context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_LIMIT)
        try:
            sock.bind(self.endpoint)
            os.chmod(self.path, SOCKET_MODE)
        except (zmq.ZMQError, OSError) as e:
            sock.close(linger=0)
            raise ControlError(f"cannot listen on {self.path}: {e}") from e
        return sock

    def _release_context(self) -> None:
        if self._own_context:
            self._context.term()
            self._own_context = False

    async def _claim_path(self) -> None:
        """Refuse a path another daemon answers on; remove a dead daemon's socket file."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{self.path} exists and is not a socket; remove it or pick another")
        if await self._someone_answers():
            raise ControlError(
                f"another streamd answers on {self.path}; stop it or set control.socket"
            )
        self.path.unlink(missing_ok=True)

    async def _someone_answers(self) -> bool:
        probe = self._context.socket(zmq.DEALER)
        try:
            probe.connect(self.endpoint)
            await probe.send_multipart([b"", encode_request("ping")])
            return bool(await probe.poll(int(PROBE_TIMEOUT_S * 1000)))  # POLLIN
        finally:
            probe.close(linger=0)

    async def close(self) -> None:
        """Stop answering; requests still running are told the daemon is stopping."""
        if self._receiver is not None:
            self._receiver.cancel()
            await asyncio.gather(self._receiver, return_exceptions=True)
            self._receiver = None
        await self._stop_in_flight()
        if self._socket is not None:
            self._socket.close(linger=CLOSE_LINGER_MS)
            self._socket = None
            self.path.unlink(missing_ok=True)
        self._release_context()

    async def _stop_in_flight(self) -> None:
        tasks = dict(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task, (envelope, request) in tasks.items():
            if task.cancelled():
                await self._send(envelope, encode_reply(request.id, error="streamd is stopping"))

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _receive_loop(self, sock: zmq.asyncio.Socket) -> None:
        while True:
            envelope, body = _split_envelope(await sock.recv_multipart())
            try:
                reply = self._reply_now(envelope, body)
            except Exception:
                # The boundary of the server: a bug in one request must not end the loop
                # that answers all the others.
                log.exception("control request crashed the dispatcher")
                reply = encode_reply(None, error="internal error; see the daemon's log")
            if reply is not None:
                await self._send(envelope, reply)

    def _reply_now(self, envelope: list[bytes], body: list[bytes]) -> bytes | None:
        """Answer what needs no handler (bad requests, ping, overload) at once; otherwise
        start the handler in its own task, so a long poll does not hold up other clients."""
        if len(body) != 1:
            return encode_reply(None, error="a request is exactly one frame of JSON")
        try:
            request = parse_request(body[0])
        except ProtocolError as e:
            log.warning("control request refused", reason=str(e))
            return encode_reply(e.request_id, error=str(e))
        if request.cmd == "ping":
            return encode_reply(request.id, result={"pong": True})
        if len(self._in_flight) >= self._max_in_flight:
            return encode_reply(request.id, error="busy: too many requests in flight, retry")
        task = asyncio.create_task(self._answer(envelope, request))
        self._in_flight[task] = (envelope, request)
        task.add_done_callback(self._forget)
        return None

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)

    async def _send(self, envelope: list[bytes], reply: bytes) -> None:
        # A ROUTER drops replies to peers that left; an error here only means the socket
        # is closing under a handler that finished late.
        if self._socket is not None:
            try:
                await self._socket.send_multipart([*envelope, reply])
            except zmq.ZMQError as e:
                log.debug("control reply not sent", error=str(e))

    async def _answer(self, envelope: list[bytes], request: Request) -> None:
        await self._send(envelope, await self._run_handler(request))

    async def _run_handler(self, request: Request) -> bytes:
        try:
            return encode_reply(request.id, result=await self._handler(request.cmd, request.args))
        except ControlError as e:
            return encode_reply(request.id, error=str(e))
        except Exception as e:
            log.exception("control command failed", cmd=request.cmd)
            error = f"internal error in {request.cmd}: {type(e).__name__}: {e}"
            return encode_reply(request.id, error=error)


# --- the summary feed ---------------------------------------------------------------------


class SummaryFeed:
    """The last `keep` summaries, numbered from 1, behind the `summaries` command.

    publish() runs on the event loop (from the engine thread:
    loop.call_soon_threadsafe(feed.publish, summary)); handle() is the command.
    """

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.epoch = secrets.token_hex(8)  # changes each run, so clients notice a restart
        self._entries: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep)
        self._last = 0
        self._changed = asyncio.Event()

    def publish(self, summary: dict[str, Any]) -> int:
        """Keep a summary and wake the long polls; returns its number."""
        self._last += 1
        self._entries.append((self._last, summary))
        self._changed.set()
        self._changed = asyncio.Event()
        return self._last

    async def handle(self, args: dict[str, Any]) -> dict[str, Any]:
        """The `summaries` command (see the module doc for its arguments)."""
        check_args("summaries", args, ("after", "epoch", "wait_s", "limit"))
        after = _int_arg(args, "after", 0, None)
        limit = _int_arg(args, "limit", 0, self.keep)
        wait_s = _float_arg(args, "wait_s", 0.0, MAX_WAIT_S)
        if after is None:
            return self._recent(RECENT_DEFAULT if limit is None else limit)
        if args.get("epoch") != self.epoch:
            after = 0  # another run's numbering: everything this run kept is new
        after = min(after, self._last)
        if wait_s and self._last == after:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait_s)
        return self._newer(after, self.keep if limit is None else limit)

    def _recent(self, limit: int) -> dict[str, Any]:
        entries = list(self._entries)[len(self._entries) - limit :] if limit else []
        return self._page(entries, self._last, missed=0)

    def _newer(self, after: int, limit: int) -> dict[str, Any]:
        newer = [(n, s) for n, s in self._entries if n > after][:limit]
        first_kept = self._entries[0][0] if self._entries else self._last + 1
        cursor = newer[-1][0] if newer else after
        return self._page(newer, cursor, missed=max(0, first_kept - after - 1))

    def _page(
        self, entries: list[tuple[int, dict[str, Any]]], cursor: int, missed: int
    ) -> dict[str, Any]:
        summaries = [s for _, s in entries]
        return {"epoch": self.epoch, "cursor": cursor, "missed": missed, "summaries": summaries}


def _int_arg(args: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ControlError(f"summaries: {name} must be an integer {allowed}, not {value!r}")
    return int(value)


def _float_arg(args: dict[str, Any], name: str, low: float, high: float) -> float:
    value = args.get(name, low)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ControlError(f"summaries: {name} must be a number from {low:g} to {high:g}")
    return float(value)


# --- the client ---------------------------------------------------------------------------


def _decode_reply(frame: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        raise ControlError("the daemon sent a reply that is not a JSON object")
    return reply


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
        self, cmd: str, args: dict[str, Any] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The command's result; raises ControlError with the daemon's reason, or
        DaemonUnreachable when nothing answers within the timeout."""
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
        reply = self._receive(sock, request_id, self.timeout_s if timeout_s is None else timeout_s)
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
        self, sock: zmq.Socket[bytes], request_id: int, timeout_s: float
    ) -> dict[str, Any]:
        """The reply to `request_id`, skipping late replies to earlier, timed-out requests."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            if not sock.poll(max(1, int(remaining * 1000)), zmq.POLLIN):
                break
            reply = _decode_reply(sock.recv_multipart()[-1])
            if reply.get("id") == request_id:
                return reply
        raise DaemonUnreachable(self._unreachable())

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
