"""Summary outputs (sinks): stdout, an append-only JSONL file, a ZeroMQ PUB socket, MQTT.

Each summary record (seq, time, text, ...: SummaryRecord.as_json(), daemon/engine/api.py) is
one line of compact UTF-8 JSON: `async with JsonlFileSink(path) as sink: await sink.emit(record)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

import zmq
import zmq.asyncio

from .checks import check_positive, check_zmq_address
from .durable import fsync_directory, write_all
from .lifecycle import OpenClose
from .writer_thread import WriterThread
from .zmq_common import bound_endpoint, limit_socket, shared_context
from .zmq_security import CurveKeyPair, make_curve_server

Record = Mapping[str, Any]


class Sink(Protocol):
    name: str

    async def open(self) -> None: ...

    # Returns once the record is as safe as the sink makes it: written and flushed (stdout),
    # fsynced (file), handed to ZeroMQ (PUB), or queued for the broker (MQTT; published in
    # the background: mqtt_sink.py). Blocking writes run in a thread: a slow disk or reader
    # never stalls the loop.
    async def emit(self, record: Record) -> None: ...

    async def close(self) -> None: ...


def json_line(record: Record) -> bytes:
    """One record as one line of UTF-8 JSON, newline included.

    default=str: a summary is never lost over one field of an odd type;
    errors="replace": nor over a lone surrogate in model output.
    """
    text = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str)
    return (text + "\n").encode("utf-8", errors="replace")


class SinkBase(OpenClose):
    name = "sink"


class StdoutSink(SinkBase):
    """One JSON line per summary on stdout (or the text stream given).

    Written from a thread of its own (writer_thread.py): stdout may be a pipe whose reader
    stopped reading, or a terminal on hold (Ctrl-S), and then the write never returns.
    emit waits for it; the daemon puts a bounded queue in front (daemon/output_queue.py),
    so only this output stalls.
    """

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream  # None: sys.stdout at write time (tests and redirections swap it)
        self._writer: WriterThread | None = None

    async def open(self) -> None:
        self._writer = WriterThread(self._write, name="streamd-stdout")

    async def emit(self, record: Record) -> None:
        if self._writer is None:
            raise RuntimeError("stdout: open() the sink (or use `async with`) before emit()")
        await self._writer.write(json_line(record))

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write(self, data: bytes) -> None:  # on the writer thread
        stream = self._stream if self._stream is not None else sys.stdout
        if stream is sys.__stdout__ and stream is not None:
            # Past its buffer: a write stuck under the buffer's lock would make interpreter
            # shutdown fail on that lock (nothing else writes to stdout: logs go to stderr).
            write_all(stream.fileno(), data)
            return
        stream.write(data.decode("utf-8"))
        stream.flush()


class JsonlFileSink(SinkBase):
    """Append-only JSONL: one record per line, each fsynced before emit returns.

    The file is opened with O_APPEND and never truncated. If the last run died
    mid-record (a torn last line), a newline is added first so the torn
    record stays on a line of its own and the new ones parse.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = asyncio.Lock()  # one record at a time, in emit order

    async def open(self) -> None:
        # Blocking disk work (open, fsync) runs in a thread: the loop never waits on a disk.
        self._fd = await asyncio.to_thread(_open_for_append, self.path)

    async def emit(self, record: Record) -> None:
        if self._fd is None:
            raise RuntimeError(f"{self.path}: open() the sink (or use `async with`) before emit()")
        async with self._lock:
            await asyncio.to_thread(_append_whole, self._fd, json_line(record))

    async def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


TAIL_BYTES = 256 * 1024  # where the last record of a summary file is looked for


def last_seq(path: str | os.PathLike[str]) -> int:
    """The largest "seq" among the last records of a summary JSONL file; 0 if none.

    A restarted daemon numbers on from here, so a summary written after its last
    snapshot (then a SIGKILL) does not get its number again. Torn or foreign lines
    are skipped.
    """
    record = last_record(path)
    return 0 if record is None else int(record["seq"])


def last_record(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The record with the largest "seq" among the last of a summary JSONL file (its
    time is the last summary's for a restarted daemon's status); None if none."""
    try:
        with Path(path).open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - TAIL_BYTES))
            tail = file.read()
    except OSError:
        return None
    records = [record for line in tail.splitlines() if (record := _numbered(line))]
    return max(records, key=lambda record: int(record["seq"]), default=None)


def _numbered(line: bytes) -> dict[str, Any] | None:
    """A JSON object with an integer "seq", or None."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    seq = record.get("seq") if isinstance(record, dict) else None
    return record if isinstance(seq, int) and not isinstance(seq, bool) else None


def _open_for_append(path: Path) -> int:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    if created:
        fsync_directory(path.parent)  # so that the new file's name survives a crash
    elif _ends_torn(path):
        _append_synced(fd, b"\n")
    return fd


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as file:
        if file.seek(0, os.SEEK_END) == 0:
            return False
        file.seek(-1, os.SEEK_END)
        return file.read(1) != b"\n"


def _append_synced(fd: int, data: bytes) -> None:
    write_all(fd, data)
    os.fsync(fd)


def _append_whole(fd: int, record: bytes) -> None:
    """One record, or nothing: a write that fails midway (a full disk) is cut back to the
    previous record's end, so the next record does not glue onto half of this one."""
    boundary = os.lseek(fd, 0, os.SEEK_END)
    try:
        _append_synced(fd, record)
    except OSError:
        with contextlib.suppress(OSError):  # the error raised is the write's, not this one's
            os.ftruncate(fd, boundary)
        raise


class ZmqPubSink(SinkBase):
    """Publishes each record as one single-frame message on a bound PUB socket.

    PUB never blocks: a subscriber that is not connected, or too slow (past
    `hwm` queued), misses records. With `curve` (the daemon's key pair) it is a
    CURVE server: only subscribers that a ZapAuthenticator lets in get records.
    """

    name = "zmq-pub"

    def __init__(
        self,
        bind: str,
        hwm: int = 1000,
        context: zmq.asyncio.Context | None = None,
        curve: CurveKeyPair | None = None,
    ) -> None:
        check_zmq_address("zmq pub bind", bind)
        check_positive("zmq pub hwm", hwm)
        self.bind = bind
        self._hwm = hwm
        self._curve = curve
        self._context = shared_context(context)
        self._socket: zmq.asyncio.Socket | None = None

    @property
    def endpoint(self) -> str:
        """The bound address; with a `tcp://host:*` bind, the port that was picked."""
        return bound_endpoint(self._opened())

    async def open(self) -> None:
        socket = self._context.socket(zmq.PUB)
        limit_socket(socket, None, self._hwm)
        if self._curve is not None:
            make_curve_server(socket, self._curve)
        try:
            socket.bind(self.bind)
        except zmq.ZMQError:
            socket.close(linger=0)
            raise
        self._socket = socket

    async def emit(self, record: Record) -> None:
        await self._opened().send(json_line(record).rstrip(b"\n"))

    async def close(self) -> None:
        if self._socket is not None:
            self._socket.close()  # with the short linger of limit_socket
            self._socket = None

    def _opened(self) -> zmq.asyncio.Socket:
        if self._socket is None:
            raise RuntimeError(f"zmq pub {self.bind}: open() the sink (or use `async with`) first")
        return self._socket
