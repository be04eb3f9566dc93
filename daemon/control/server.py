"""ControlServer: answers control requests on a ZeroMQ ROUTER at ipc://<socket>.

The socket file is made mode 0660 right after bind, inside a directory the server
creates 0750 (under systemd, RuntimeDirectoryMode=0750 already did).
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog
import zmq
import zmq.asyncio

from .protocol import (
    HARD_FRAME_LIMIT,
    STOPPING_REPLY,
    ControlError,
    ProtocolError,
    Request,
    encode_accepted,
    encode_reply,
    encode_request,
    endpoint_for,
    parse_request,
)
from .replies import accepting

log = structlog.get_logger(__name__)

MAX_IN_FLIGHT = 64  # concurrent requests, long polls included
SOCKET_MODE = 0o660
DIRECTORY_MODE = 0o750
CLOSE_LINGER_MS = 200  # time for the last replies ("streamd is stopping") to leave
PROBE_TIMEOUT_S = 0.3  # how long start() waits to see whether another daemon owns the socket

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


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
        _refuse_shared_directory(self.path.parent)
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
                await self._send(envelope, encode_reply(request.id, error=STOPPING_REPLY))

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
        async def send_accepted(note: dict[str, Any]) -> None:
            await self._send(envelope, encode_accepted(request.id, note))

        with accepting(send_accepted):  # the handler's accept() replies through it
            reply = await self._run_handler(request)
        await self._send(envelope, reply)

    async def _run_handler(self, request: Request) -> bytes:
        try:
            return encode_reply(request.id, result=await self._handler(request.cmd, request.args))
        except ControlError as e:
            return encode_reply(request.id, error=str(e))
        except Exception as e:
            log.exception("control command failed", cmd=request.cmd)
            error = f"internal error in {request.cmd}: {type(e).__name__}: {e}"
            return encode_reply(request.id, error=error)


class SharedFolder(ControlError):
    """The control socket's folder is writable by every user: a setting to change."""


def _refuse_shared_directory(folder: Path) -> None:
    """A folder every user may write to lets any of them put their own socket at our path
    (and answer `tune` for us): refused, not used silently."""
    mode = folder.stat().st_mode
    if mode & stat.S_IWOTH:
        raise SharedFolder(
            f"{folder} is writable by every user (mode {stat.S_IMODE(mode):04o}): another "
            "user could replace the control socket; use a folder only streamd's user and "
            "group may write (chmod o-w, systemd's RuntimeDirectory=) or set control.socket"
        )
