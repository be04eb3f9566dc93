"""The durable intake: received messages appended to disk before they count as received.

`Spool` is the event loop's side. One writer thread owns the files (daemon/intake/spool_file.py):
it writes appends in order, in batches, and fsyncs when someone waits for durability (an
acknowledgement) or at least every `sync_every_seconds`; the loop awaits futures and never
the disk. Bounded by `max_bytes`: a block source waits for room, which trimming makes
(after a snapshot: daemon/snapshot_keeper.py; without snapshots, once ingested).
DESIGN.md, "The spool", has the whole picture.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ..config import SpoolConfig
from ..metrics import StreamdMetrics
from . import spool_file as files
from .spool_file import Record, ScanReport, Segment, SegmentWriter
from .spool_ledger import Ledger

log = structlog.get_logger(__name__)

DIRECTORY = "spool"
MIN_SEGMENT_BYTES = 4 * 1024
MAX_SEGMENT_BYTES = 16 * 1024 * 1024
AGE_INDEX_EVERY_S = 1.0  # the oldest record's age is known to this precision


class SpoolWriteError(OSError):
    """An append could not be written (a full disk, an I/O error); nothing of it remains."""


@dataclass
class _Append:
    records: list[Record]
    data: bytes
    done: asyncio.Future[int]  # the bytes written


@dataclass
class _Trim:
    upto: int
    next_seq: int
    senders: dict[str, int]


@dataclass
class _Shared:
    """What the writer thread reports back to the loop (set with call_soon_threadsafe)."""

    segments: list[Segment] = field(default_factory=list)


class SpoolMetrics:
    def __init__(self, metrics: StreamdMetrics) -> None:
        r = metrics.registry
        self.bytes = r.gauge("streamd_spool_bytes", "Bytes of the spool's files.")
        self.oldest_age = r.gauge(
            "streamd_spool_oldest_age_seconds",
            "Age of the oldest spooled message not yet ingested and snapshotted (0: none).",
        )
        self.records = r.counter("streamd_spool_records_total", "Messages appended to the spool.")
        self.replayed = r.counter(
            "streamd_spool_replayed_total",
            "Messages replayed from the spool at start (received by an earlier run).",
            ("source",),
        )
        self.full_waits = r.counter(
            "streamd_spool_full_waits_total", "Appends that waited for room in a full spool."
        )
        self.skipped_bytes = r.counter(
            "streamd_spool_skipped_bytes_total",
            "Bytes of torn or damaged records skipped when the spool was opened.",
        )
        self.errors = r.counter("streamd_spool_errors_total", "Spool writes that failed.")
        self.duplicates = r.counter(
            "streamd_spool_duplicates_total",
            "Acknowledged-delivery messages dropped as already spooled (sender id, seq).",
            ("source",),
        )


class Spool:
    def __init__(self, state_dir: Path, settings: SpoolConfig, metrics: StreamdMetrics) -> None:
        self.directory = state_dir / DIRECTORY
        self.settings = settings
        self.metrics = SpoolMetrics(metrics)
        self.ledger = Ledger()
        self.senders: dict[str, int] = {}  # acked sender -> highest seq spooled
        self.scan = ScanReport()
        self.bytes = 0
        self.trimmed_upto = 0  # every record up to here is ingested and snapshotted
        self.replayed = 0
        self.last_error: str | None = None
        self._next_seq = 1
        self._synced_upto = 0
        self._sync_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._ages: deque[tuple[int, float]] = deque()  # (first seq, time), one a second
        self._room = asyncio.Event()  # set when a trim freed bytes
        self._ops: queue.SimpleQueue[_Append | _Trim | str | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shared = _Shared()
        self.pressure = asyncio.Event()  # an append waits for room: a snapshot would trim
        self.waiting = 0  # appends waiting for room now

    # ------------------------------------------------------------------ open

    async def open(self) -> ScanReport:
        """Check every record on disk (in a worker thread) and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        report = await asyncio.to_thread(self._scan)
        self.scan = report
        self._shared.segments = list(report.segments)
        self.bytes = sum(s.size for s in report.segments)
        if report.skipped_bytes:
            self.metrics.skipped_bytes.inc(report.skipped_bytes)
            log.warning(
                "spool: torn or damaged records skipped",
                bytes=report.skipped_bytes,
                places=report.damaged,
            )
        self._thread = threading.Thread(target=self._write_loop, name="streamd-spool", daemon=True)
        self._thread.start()
        self._observe()
        return report

    def _scan(self) -> ScanReport:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        state = files.read_state(self.directory)
        report = files.scan(self.directory, state.get("totals"))
        self.senders = dict(state.get("senders", {}))
        for sender, seq in report.senders.items():
            self.senders[sender] = max(self.senders.get(sender, 0), seq)
        self._next_seq = max(state.get("next_seq", 1), report.last_seq + 1)
        # Taken in and trimmed as far as this, though its segment is still there.
        self.trimmed_upto = state.get("trimmed_upto", 0)
        return report

    def start_after(self, upto: int | None) -> int:
        """The session holds every record up to `upto` (its snapshot's; None: nothing, or
        without snapshots, what the last run trimmed); returns where the replay starts."""
        upto = max(upto or 0, self.trimmed_upto)
        self._next_seq = max(self._next_seq, upto + 1)
        self.trimmed_upto = max(self.trimmed_upto, upto)
        # Not past `upto`: the records after it are outstanding until replayed and taken
        # in, and a snapshot during the replay must not record (and trim) them.
        self.ledger.start_after(upto)
        return upto

    async def replay(self, upto: int | None) -> AsyncIterator[Record]:
        """The records written before this start and not in the session (after `upto`),
        in order; each segment read in a worker thread."""
        for segment in list(self.scan.segments):
            if segment.last <= (upto or 0):
                continue
            records = await asyncio.to_thread(_read, segment)
            for record in records:
                if record.seq > (upto or 0) and record.lines:
                    self.ledger.spooled(record.seq)
                    self._index_age(record.seq, record.time)
                    yield record

    # ---------------------------------------------------------------- append

    def has_room(self, size: int) -> bool:
        return not self.bytes or self.bytes + size <= self.settings.max_bytes

    async def append(self, record: Record, *, wait: bool) -> int | None:
        """Write one record (numbered here); returns its seq once written, or None if the
        spool is full and `wait` is False. SpoolWriteError if the disk refused it."""
        size = files.HEADER_BYTES + sum(len(line) + 1 for line in record.lines)  # about
        if not self.has_room(size):
            if not wait:
                return None
            self.metrics.full_waits.inc()
            self.pressure.set()
            self.waiting += 1
            try:
                while not self.has_room(size):
                    self._room.clear()
                    await self._room.wait()
            finally:
                self.waiting -= 1
        seq = self._next_seq
        self._next_seq += 1
        record = Record(seq, record.source, record.lines, record.time, *_who(record))
        data = files.encode(record)
        self.bytes += len(data)  # counted now, so that concurrent appends see it
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._ops.put(_Append([record], data, done))
        try:
            await done
        except OSError as error:
            self.bytes -= len(data)
            self._failed(error)
            raise SpoolWriteError(str(error)) from None
        self.metrics.records.inc()
        self._index_age(seq, record.time)
        if record.lines:
            self.ledger.spooled(seq)
        self._observe()
        return seq

    @property
    def last_seq(self) -> int:
        """The last seq handed out (its write may still be under way)."""
        return self._next_seq - 1

    async def synced(self, seq: int) -> None:
        """Until an fsync covers record `seq` (an acknowledgement may then go out)."""
        if seq <= self._synced_upto:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sync_waiters.append((seq, waiter))
        self._ops.put("sync")
        await waiter

    def _failed(self, error: OSError) -> None:
        self.metrics.errors.inc()
        self.last_error = f"{type(error).__name__}: {error}"
        log.warning("spool write failed", error=self.last_error, directory=str(self.directory))

    # ------------------------------------------------------------------ trim

    def trim(self, upto: int) -> None:
        """Every record up to `upto` is in the session state that will be resumed: whole
        segments at or below it go (the dedup table and the next seq are kept first)."""
        if upto <= self.trimmed_upto:
            return
        self.trimmed_upto = upto
        while len(self._ages) > 1 and self._ages[1][0] <= upto + 1:
            self._ages.popleft()
        self._ops.put(_Trim(upto, self._next_seq, dict(self.senders)))
        self._observe()

    def _trimmed(self, freed: int) -> None:  # on the loop, from the writer thread
        self.bytes -= freed
        self._observe()
        self._room.set()

    # ----------------------------------------------------------------- close

    async def close(self) -> None:
        """Write and fsync what is pending, then end the writer thread."""
        if self._thread is None:
            return
        self._ops.put(_Trim(self.trimmed_upto, self._next_seq, dict(self.senders)))
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # ---------------------------------------------------------------- status

    def _index_age(self, seq: int, when: float) -> None:
        if not self._ages or when - self._ages[-1][1] >= AGE_INDEX_EVERY_S:
            self._ages.append((seq, when))

    def oldest_age_s(self) -> float | None:
        """Age of the oldest record not yet trimmed, to about a second (None: none)."""
        if self._next_seq - 1 <= self.trimmed_upto or not self._ages:
            return None
        return max(0.0, time.time() - self._ages[0][1])

    def _observe(self) -> None:
        self.metrics.bytes.set(self.bytes)
        self.metrics.oldest_age.set(self.oldest_age_s() or 0.0)

    def status(self) -> dict[str, Any]:
        self._observe()
        age = self.oldest_age_s()
        return {
            "enabled": True,
            "path": str(self.directory),
            "bytes": self.bytes,
            "max_bytes": self.settings.max_bytes,
            "records": max(0, self._next_seq - 1 - self.trimmed_upto),
            "oldest_age_s": None if age is None else round(age, 3),
            "last_seq": self._next_seq - 1,
            "trimmed_upto": self.trimmed_upto,
            "replayed": self.replayed,
            "full_waits": int(self.metrics.full_waits.value()),
            "skipped_bytes": int(self.metrics.skipped_bytes.value()),
            "errors": int(self.metrics.errors.value()),
            "last_error": self.last_error,
            "senders": len(self.senders),
            # Messages ever spooled (since the state directory was made), by source.
            "spooled_by_source": dict(self.scan.totals.by_source),
        }

    # ---------------------------------------------------- the writer thread

    def _call(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def _write_loop(self) -> None:
        writer = SegmentWriter(
            self.directory, self._segment_bytes(), self._shared.segments, self.scan.totals
        )
        dirty_since: float | None = None
        running = True
        while running:
            timeout = None
            if dirty_since is not None:
                timeout = max(0.0, dirty_since + self.settings.sync_every_seconds - time.time())
            try:
                ops = [self._ops.get(timeout=timeout)]
            except queue.Empty:
                ops = []
            while True:  # everything pending: one batch, at most one fsync
                try:
                    ops.append(self._ops.get_nowait())
                except queue.Empty:
                    break
            sync = dirty_since is not None and time.time() - dirty_since >= (
                self.settings.sync_every_seconds
            )
            for op in ops:
                if op is None:
                    running, sync = False, True
                elif op == "sync":
                    sync = True
                elif isinstance(op, _Append):
                    self._write_one(writer, op)
                    dirty_since = dirty_since or time.time()
                elif isinstance(op, _Trim):
                    self._guarded(self._trim_one, writer, op)
            if sync and self._guarded(self._sync, writer):
                dirty_since = None
        self._guarded(writer.close)

    def _guarded(self, fn: Callable[..., None], *args: Any) -> bool:
        """The writer thread must outlive a failing disk: an error is reported to the loop
        (counted, logged) and the thread goes on. False if it failed."""
        try:
            fn(*args)
        except OSError as error:
            self._call(self._failed, error)
            return False
        return True

    def _sync(self, writer: SegmentWriter) -> None:
        # A failed fsync acknowledges nothing: the acked senders resend, and wait.
        writer.sync()
        self._call(self._synced, writer.last_seq)

    def _trim_one(self, writer: SegmentWriter, op: _Trim) -> None:
        self._sync(writer)
        self._call(self._trimmed, writer.trim(op.upto, op.next_seq, op.senders))

    def _write_one(self, writer: SegmentWriter, op: _Append) -> None:
        try:
            writer.append(op.records, op.data)
        except OSError as error:
            self._call(_settle_error, op.done, error)
            return
        self._call(_settle, op.done, len(op.data))

    def _synced(self, upto: int) -> None:  # on the loop
        self._synced_upto = max(self._synced_upto, upto)
        still = []
        for seq, waiter in self._sync_waiters:
            if seq <= self._synced_upto:
                _settle(waiter, None)
            else:
                still.append((seq, waiter))
        self._sync_waiters = still

    def _segment_bytes(self) -> int:
        return max(MIN_SEGMENT_BYTES, min(MAX_SEGMENT_BYTES, self.settings.max_bytes // 8))


def _read(segment: Segment) -> list[Record]:
    return list(files.read_records(segment.path, limit=segment.size))


def _who(record: Record) -> tuple[str, int]:
    return record.sender, record.sender_seq


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _settle_error(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
