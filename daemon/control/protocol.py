"""The control wire format: one ZeroMQ frame of UTF-8 JSON each way.

Request {"v": 1, "cmd": "status", "args": {}, "id": 7} (args and id optional), at most
MAX_REQUEST_BYTES; reply {"v": 1, "id": 7, "ok": true, "result": {...}} or
{"v": 1, "id": 7, "ok": false, "error": "what was wrong, in words"}. A command that waits
for the engine (tune, summarize) first replies {"v": 1, "id": 7, "ok": true, "accepted":
{"engine": {...}}} at once (valid, queued; what the engine is doing), then its result.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
# Frames above this are cut off by libzmq itself (the peer is disconnected) so that a
# huge frame is never buffered; between the two limits the client gets an error reply.
HARD_FRAME_LIMIT = 1024 * 1024
# The server answers ping itself; the handlers (handlers.py) the rest:
#   status     {}                                      -> the status document (status.py)
#   tune       {"max_capacity"?, "summary_every_tokens"?, "summary_every_seconds"?}
#                                                      -> {"changed": {key: [old, new]}}
#   summarize  {}                                      -> one summary record
#   summaries  {"after"?, "epoch"?, "wait_s"?, "limit"?}  (feed.py)
#                                                      -> {"epoch", "cursor", "missed", "summaries"}
COMMANDS = ("ping", "status", "tune", "summarize", "summaries")
REQUEST_FIELDS = ("v", "cmd", "args", "id")
MAX_ID_CHARS = 128
# The error a request still running at shutdown gets; `summaries --follow` ends on it.
STOPPING_REPLY = "streamd is stopping"

# `tune` arguments and the config keys they change: the service applies them with
# Config.with_overrides, whose errors then name the key and the allowed values.
TUNE_KEYS = {
    "max_capacity": "cache.max_capacity",
    "summary_every_tokens": "summary.every_tokens",
    "summary_every_seconds": "summary.every_seconds",
}

RequestId = str | int | None


class ControlError(Exception):
    """A refused request; the message is what the client is told. Handlers raise it."""


class ProtocolError(ControlError):
    """A request that is not valid protocol (not JSON, too big, unknown command...)."""

    def __init__(self, message: str, request_id: RequestId = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class DaemonUnreachable(ControlError):
    """Nothing listens on the control socket: no daemon runs there."""


class DaemonNotAnswering(ControlError):
    """Something listens on the control socket but sent no reply in time."""


class StillRunning(ControlError):
    """The daemon accepted the request; its result did not come within the timeout (the
    request goes on). `accepted` is the daemon's note: what the engine was doing."""

    def __init__(self, message: str, accepted: dict[str, Any]) -> None:
        super().__init__(message)
        self.accepted = accepted


@dataclass(frozen=True)
class Request:
    cmd: str
    args: dict[str, Any]
    id: RequestId = None


def endpoint_for(socket_path: Path) -> str:
    return f"ipc://{socket_path}"


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


def encode_accepted(request_id: RequestId, note: dict[str, Any]) -> bytes:
    """The interim reply: the request is valid and queued; its result follows."""
    reply: dict[str, Any] = {"v": PROTOCOL_VERSION}
    if request_id is not None:
        reply["id"] = request_id
    return json.dumps(reply | {"ok": True, "accepted": note}, allow_nan=False).encode()


def decode_reply(frame: bytes) -> dict[str, Any]:
    """A reply frame as a dict; raises ControlError if it is not a JSON object."""
    try:
        reply = json.loads(frame)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        raise ControlError("the daemon sent a reply that is not a JSON object")
    return reply


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
    except ValueError as e:  # a number of over 4300 digits, which Python will not convert
        raise ProtocolError(f"request holds a number it cannot read: {e}") from None
    if not isinstance(request, dict):
        raise ProtocolError("request must be a JSON object")
    request_id = _request_id(request)
    return Request(_command(request, request_id), _arguments(request, request_id), request_id)


def _request_id(request: dict[str, Any]) -> RequestId:
    request_id = request.get("id")
    # 64 bits: what any client's integers hold (a 5000-digit id cannot even be printed).
    is_int = isinstance(request_id, int) and not isinstance(request_id, bool)
    is_int = is_int and -(2**63) <= int(request_id or 0) < 2**63
    if (
        request_id is None
        or is_int
        or (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS)
    ):
        return request_id
    raise ProtocolError(
        f"id must be a 64-bit integer or a string of at most {MAX_ID_CHARS} characters"
    )


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
