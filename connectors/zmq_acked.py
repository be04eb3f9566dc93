"""Acknowledged delivery over ZeroMQ: the daemon's ROUTER source and the wire format that
`streamd send` (connectors/send_acked.py) speaks to it.

A plain PUSH/PULL pipe has no acknowledgement: lines in the receiver's buffers when it
restarts are gone while the sender thinks them sent. Here, as in the Beats/Lumberjack and
Fluentd forward protocols, the sender numbers its lines, keeps a window of unacknowledged
ones and resends them until the receiver acknowledges; the receiver acknowledges a line
only once it is spooled (on disk), and drops the duplicates a resend makes by
(sender id, seq).

Frames, sender -> daemon (a DEALER; the ROUTER adds the identity frame in front):
    header: "SA1" | sender id (16 bytes) | seq u64 | floor u64   (big-endian)
    payload: the line
`floor` is the sender's oldest unacknowledged seq when it sent this one: everything below
it was acknowledged (by this daemon or the one before a restart). The daemon takes seq
only as the next one it expects, max(last spooled + 1, floor); a later one means lines in
between were lost in flight (a connection torn), and it waits for the resend.

Daemon -> sender: "SA1" | sender id | acked u64: every seq up to `acked` is spooled
(cumulative, as TCP's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import uuid
from dataclasses import dataclass

import structlog
import zmq
import zmq.asyncio

from .checks import check_zmq_address
from .lifecycle import OpenClose
from .messages import MIB, Deliver
from .receipts import DurableMessage, Receipt
from .zmq_common import bound_endpoint, limit_socket, shared_context
from .zmq_security import CurveKeyPair, make_curve_server

log = structlog.get_logger(__name__)

MAGIC = b"SA1"
HEADER = struct.Struct(">3s16sQQ")
ACK = struct.Struct(">3s16sQ")
IPC_MODE = 0o660  # like the control socket: the daemon's group may send


def new_sender_id() -> bytes:
    return uuid.uuid4().bytes


def pack_line(sender: bytes, seq: int, floor: int) -> bytes:
    return HEADER.pack(MAGIC, sender, seq, floor)


def pack_ack(sender: bytes, acked: int) -> bytes:
    return ACK.pack(MAGIC, sender, acked)


def unpack_ack(frame: bytes) -> tuple[bytes, int] | None:
    if len(frame) != ACK.size:
        return None
    magic, sender, acked = ACK.unpack(frame)
    return (sender, acked) if magic == MAGIC else None


@dataclass(frozen=True)
class AckedMessage(DurableMessage):
    """A message from an acked sender: its id (hex), its seq and floor (see above)."""

    sender: str = ""
    seq: int = 0
    floor: int = 0


@dataclass(frozen=True)
class ZmqAckedConfig:
    bind: str
    name: str = "zmq-acked"  # the source name in counters and logs
    max_message_bytes: int = MIB
    hwm: int = 1000
    curve: CurveKeyPair | None = None

    def __post_init__(self) -> None:
        check_zmq_address("zmq acked bind", self.bind)


class ZmqAckedSource(OpenClose):
    """The ROUTER: reads up to MAX_BATCH messages, delivers each, waits until the spool
    holds them on disk, then acknowledges each sender once (its highest seq held)."""

    def __init__(self, config: ZmqAckedConfig, context: zmq.asyncio.Context | None = None) -> None:
        self.config = config
        self.name = config.name
        self._context = shared_context(context)
        self._socket: zmq.asyncio.Socket | None = None
        self.bad_frames = 0  # messages that were not our wire format (dropped, logged once)

    async def open(self) -> None:
        socket = self._context.socket(zmq.ROUTER)
        # The payload frame is bounded; the header frame is tiny.
        limit_socket(socket, self.config.max_message_bytes + HEADER.size, self.config.hwm)
        try:
            if self.config.curve is not None:
                make_curve_server(socket, self.config.curve)
            socket.bind(self.config.bind)
            _restrict_ipc(self.config.bind)
        except BaseException:
            socket.close(linger=0)
            raise
        self._socket = socket

    @property
    def endpoint(self) -> str:
        if self._socket is None:
            raise RuntimeError(f"{self.name}: open() it first")
        return bound_endpoint(self._socket)

    async def close(self) -> None:
        if self._socket is not None:
            # Unacknowledged lines in its buffers are the senders' to resend: no linger.
            self._socket.close(linger=0)
            self._socket = None

    async def run(self, deliver: Deliver) -> None:
        """Deliver each message as it comes; acknowledgements go out from a task of their
        own, so that a delivery that waits (a full spool) does not hold back those of the
        messages before it, and one fsync acknowledges all that came meanwhile."""
        if self._socket is None:
            raise RuntimeError(f"{self.name}: open() the source (or use `async with`) first")
        socket = self._socket
        acks: asyncio.Queue[tuple[bytes, bytes, Receipt]] = asyncio.Queue()
        acker = asyncio.create_task(_acknowledge(socket, acks), name=f"{self.name} acks")
        try:
            while True:
                frames = await socket.recv_multipart()
                message = self._message(frames)
                if message is None:
                    continue
                await deliver(message)
                acks.put_nowait((frames[0], bytes.fromhex(message.sender), message.receipt))
        finally:
            acker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await acker

    def _message(self, frames: list[bytes]) -> AckedMessage | None:
        if len(frames) == 3 and len(frames[1]) == HEADER.size:
            magic, sender, seq, floor = HEADER.unpack(frames[1])
            if magic == MAGIC and seq >= 1 and floor <= seq:
                return AckedMessage(self.name, frames[2], sender=sender.hex(), seq=seq, floor=floor)
        self.bad_frames += 1
        if self.bad_frames == 1:
            log.warning(
                "acked source: a message not in streamd's acked format was dropped "
                "(use `streamd send`; PUSH senders go to a --zmq-bind PULL socket)",
                source=self.name,
                frames=len(frames),
            )
        return None


async def _acknowledge(
    socket: zmq.asyncio.Socket, acks: asyncio.Queue[tuple[bytes, bytes, Receipt]]
) -> None:
    """Each sender's highest seq held, once it is on disk; until cancelled."""
    while True:
        latest = [await acks.get()]
        while not acks.empty():
            latest.append(acks.get_nowait())
        receipts = {(identity, sender): receipt for identity, sender, receipt in latest}
        for (identity, sender), receipt in receipts.items():
            if receipt.durable is not None:
                await receipt.durable()
            if receipt.acked:
                # A sender that went away misses it and resends: ROUTER drops it quietly.
                await socket.send_multipart([identity, pack_ack(sender, receipt.acked)])


def _restrict_ipc(bind: str) -> None:
    if bind.startswith("ipc://") and not bind.startswith("ipc://@"):
        os.chmod(bind.removeprefix("ipc://"), IPC_MODE)
