"""ZeroMQ sources: PULL (bind, senders push to us) and SUB (connect to publishers).

`async with ZmqPullSource(ZmqPullConfig()) as source: await source.run(deliver)` runs until
cancelled, delivering one message (its frames joined) at a time.

Limits: max_message_bytes bounds a whole message, all its frames together (a sender could
split 100 MiB into frames of 1 MiB each). Frames are taken one at a time, so a message over
the limit is counted and let go frame by frame, never held whole. libzmq itself drops the
connection of a peer whose single frame exceeds FRAME_CEILING times the limit, before
buffering it; below that ceiling an oversized message is rejected (too_large, counted) and
the connection stays up, so the sender's next message still arrives.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq
import zmq.asyncio

from .checks import check_positive, check_zmq_address, require
from .lifecycle import OpenClose
from .messages import MIB, Deliver, RawMessage
from .pacing import LoopShare
from .zmq_common import bound_endpoint, limit_socket, shared_context
from .zmq_security import CurveClientKeys, CurveKeyPair, make_curve_client, make_curve_server

# Loopback: nothing off this host can feed the session unless the config says so.
DEFAULT_PULL_BIND = "tcp://127.0.0.1:5555"
MAX_TOPIC_CHARS = 256  # a SUB topic frame is a label, not content
# A frame larger than this many times max_message_bytes makes libzmq drop the connection
# (ZMQ_MAXMSGSIZE) before buffering it. Not the limit itself: a dropped connection also
# loses the good messages the sender queued behind the big one, uncounted.
FRAME_CEILING = 4


@dataclass(frozen=True)
class ZmqPullConfig:
    bind: str = DEFAULT_PULL_BIND
    name: str = "zmq-pull"  # the source name in counters and logs
    max_message_bytes: int = MIB
    hwm: int = 1000  # messages ZeroMQ queues before senders block
    # The daemon's key pair: a CURVE server whose clients a ZapAuthenticator vets.
    curve: CurveKeyPair | None = None

    def __post_init__(self) -> None:
        check_zmq_address("zmq pull bind", self.bind)
        _check_limits(self.name, self.max_message_bytes, self.hwm)


@dataclass(frozen=True)
class ZmqSubConfig:
    connect: tuple[str, ...]  # publisher addresses; all topics are subscribed
    name: str = "zmq-sub"
    max_message_bytes: int = MIB
    hwm: int = 1000  # messages queued before publishers drop for us
    curve: CurveClientKeys | None = None  # connect as a CURVE client to publishers holding this key

    def __post_init__(self) -> None:
        # Config files give lists; keep the frozen value immutable.
        object.__setattr__(self, "connect", tuple(self.connect))
        require(
            len(self.connect) > 0,
            "zmq sub connect = []: give at least one publisher address, e.g. tcp://127.0.0.1:5556",
        )
        for address in self.connect:
            check_zmq_address("zmq sub connect", address)
        _check_limits(self.name, self.max_message_bytes, self.hwm)


def _check_limits(name: str, max_message_bytes: int, hwm: int) -> None:
    require(bool(name.strip()), f"source name = {name!r}: give a short non-empty name")
    check_positive(f"{name} max_message_bytes", max_message_bytes)
    check_positive(f"{name} hwm", hwm)


class _ZmqSource(OpenClose):
    """The receive loop and socket lifetime; subclasses attach and frame messages."""

    socket_type: int

    def __init__(
        self, name: str, max_message_bytes: int, hwm: int, context: zmq.asyncio.Context | None
    ) -> None:
        self.name = name
        self._max_message_bytes = max_message_bytes
        self._hwm = hwm
        self._context = shared_context(context)
        self._socket: zmq.asyncio.Socket | None = None

    async def open(self) -> None:
        """Create the socket and bind/connect it; a bad or busy address raises zmq.ZMQError now."""
        socket = self._context.socket(self.socket_type)
        limit_socket(socket, FRAME_CEILING * self._max_message_bytes, self._hwm)
        try:
            self._attach(socket)
        except BaseException:
            socket.close(linger=0)
            raise
        self._socket = socket

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()  # with the LINGER_MS set in limit_socket
            self._socket = None

    async def run(self, deliver: Deliver) -> None:
        """Receive and deliver messages until cancelled."""
        socket = self._opened()
        share = LoopShare()
        while True:
            # One message at a time: a slow deliver stops this loop, ZeroMQ's receive queue fills to
            # its high-water mark, and then a PULL source's senders block instead of losing lines,
            # while a SUB source's publishers drop (that is PUB/SUB's contract).
            await deliver(await self._receive(socket))
            await share.turn()  # a flood must not keep the loop from status and the watchdog

    async def _receive(self, socket: zmq.asyncio.Socket) -> RawMessage:
        """The next message, its frames counted against max_message_bytes as they come:
        past the limit the rest are let go unkept, and the message is delivered empty with
        the size it had (decode_message rejects it as too_large)."""
        frames: list[bytes] = []
        size = 0
        more = True
        while more:
            frame = await socket.recv(copy=False)
            more = bool(socket.rcvmore)  # ZeroMQ delivers all parts of a message or none
            size += len(frame.buffer)
            if size <= self._max_message_bytes:
                frames.append(frame.bytes)
        if size > self._max_message_bytes:
            return RawMessage(self.name, b"", received_bytes=size)
        return self._message(frames)

    def _opened(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            raise RuntimeError(f"{self.name}: open() the source (or use `async with`) first")
        return self._socket

    def _attach(self, socket: zmq.asyncio.Socket) -> None:
        raise NotImplementedError

    def _message(self, frames: list[bytes]) -> RawMessage:
        # PULL: the frames are joined with a newline into one message (a sender may batch lines
        # as frames and they stay together).
        return RawMessage(self.name, b"\n".join(frames))


class ZmqPullSource(_ZmqSource):
    socket_type = zmq.PULL

    def __init__(self, config: ZmqPullConfig, context: zmq.asyncio.Context | None = None) -> None:
        super().__init__(config.name, config.max_message_bytes, config.hwm, context)
        self.config = config

    @property
    def endpoint(self) -> str:
        """The bound address; with a `tcp://host:*` bind, the port that was picked."""
        return bound_endpoint(self._opened())

    def _attach(self, socket: zmq.asyncio.Socket) -> None:
        if self.config.curve is not None:
            make_curve_server(socket, self.config.curve)
        socket.bind(self.config.bind)


class ZmqSubSource(_ZmqSource):
    socket_type = zmq.SUB

    def __init__(self, config: ZmqSubConfig, context: zmq.asyncio.Context | None = None) -> None:
        super().__init__(config.name, config.max_message_bytes, config.hwm, context)
        self.config = config

    def _attach(self, socket: zmq.asyncio.Socket) -> None:
        socket.setsockopt(zmq.SUBSCRIBE, b"")
        if self.config.curve is not None:
            make_curve_client(socket, self.config.curve)
        for address in self.config.connect:
            socket.connect(address)

    def _message(self, frames: list[bytes]) -> RawMessage:
        # Two or more frames are [topic, body...], as ZeroMQ's pub/sub envelopes are: the first
        # becomes RawMessage.topic and the rest is joined as for PULL. A single frame is all body.
        if len(frames) < 2:
            return super()._message(frames)
        topic = frames[0].decode("utf-8", errors="replace")[:MAX_TOPIC_CHARS]
        return RawMessage(self.name, b"\n".join(frames[1:]), topic=topic)
