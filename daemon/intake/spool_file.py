"""The spool on disk: segment files of checksummed records, and the small state file.

File work only (no asyncio, no torch), called from the spool's writer thread and from
worker threads. daemon/intake/spool.py decides what is written and when it is trimmed.

A segment, `state_dir/spool/<first seq, 20 digits>.seg`, is a run of records:

    magic "SPL1" | body length u32 | crc32(body) u32 | body
    body: seq u64 | time f64 | sender seq u64 | len(source) u16 | len(sender) u16
          | source | sender | text (the message's lines joined by newlines, UTF-8)

A record torn by a crash (or bytes damaged on disk) fails its length or checksum: the
scan skips to the next record that checks out and counts the bytes it skipped; a torn
tail is cut off, so appends go on from a record boundary.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from streamd.connectors.durable import fsync_directory, replace_atomically, write_all

log = structlog.get_logger(__name__)

MAGIC = b"SPL1"
_HEADER = struct.Struct("<4sII")
_BODY = struct.Struct("<QdQHH")
MAX_BODY = 64 << 20  # a message is at most a few MiB; a larger length is damage
HEADER_BYTES = _HEADER.size + _BODY.size
SUFFIX = ".seg"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class Record:
    """One received message as spooled: its lines and, from an acked sender, who sent it
    and its number there (the dedup key). A record without lines only keeps that number
    (an acked message that was rejected)."""

    seq: int  # spool position: 1, 2, 3... never reused
    source: str
    lines: tuple[str, ...]
    time: float  # Unix time it was spooled
    sender: str = ""  # acked senders only
    sender_seq: int = 0


def encode(record: Record) -> bytes:
    source, sender = record.source.encode(), record.sender.encode()
    text = "\n".join(record.lines).encode("utf-8", errors="replace")
    head = _BODY.pack(record.seq, record.time, record.sender_seq, len(source), len(sender))
    body = b"".join((head, source, sender, text))
    return _HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body


def _decode_at(data: bytes, offset: int) -> tuple[Record, int] | None:
    """The record at `offset` and the offset after it; None if none checks out there."""
    if len(data) - offset < _HEADER.size:
        return None
    magic, length, crc = _HEADER.unpack_from(data, offset)
    start, end = offset + _HEADER.size, offset + _HEADER.size + length
    if magic != MAGIC or length < _BODY.size or length > MAX_BODY or end > len(data):
        return None
    body = data[start:end]
    if zlib.crc32(body) != crc:
        return None
    seq, when, sender_seq, source_len, sender_len = _BODY.unpack_from(body)
    names_end = _BODY.size + source_len + sender_len
    if names_end > len(body):
        return None
    try:
        source = body[_BODY.size : _BODY.size + source_len].decode()
        sender = body[_BODY.size + source_len : names_end].decode()
        text = body[names_end:].decode()
    except UnicodeDecodeError:
        return None
    lines = tuple(text.split("\n")) if text else ()
    return Record(seq, source, lines, when, sender, sender_seq), end


@dataclass
class Segment:
    """A segment file as the scan found it: its records' range and its good length."""

    path: Path
    first: int = 0  # seq of its first record (0: none)
    last: int = 0
    size: int = 0  # bytes up to the end of its last good record
    first_time: float | None = None


@dataclass
class Totals:
    """Records ever written, by source, counted up to seq `upto`: the spool's lifetime
    counts. The state file holds them as of its writing and the segments the records after
    it, so they stay exact across restarts and SIGKILLs (records come in seq order)."""

    upto: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def add(self, record: Record) -> None:
        if record.seq > self.upto:
            self.by_source[record.source] = self.by_source.get(record.source, 0) + 1
            self.upto = record.seq

    def as_json(self) -> dict[str, Any]:
        return {"upto": self.upto, "by_source": dict(self.by_source)}


@dataclass
class ScanReport:
    """What opening the spool found."""

    segments: list[Segment] = field(default_factory=list)
    records: int = 0
    last_seq: int = 0
    skipped_bytes: int = 0  # torn or damaged, skipped (and cut off at a segment's end)
    damaged: int = 0  # places where the scan had to skip
    senders: dict[str, int] = field(default_factory=dict)  # highest seq per acked sender
    totals: Totals = field(default_factory=Totals)


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:020d}{SUFFIX}"


def segment_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if p.stem.isdigit())


def read_records(path: Path, limit: int | None = None) -> Iterator[Record]:
    """The good records of a segment (up to byte `limit`), damaged stretches skipped."""
    data = path.read_bytes()
    if limit is not None:
        data = data[:limit]
    offset = 0
    while offset < len(data):
        found = _decode_at(data, offset)
        if found is None:
            offset = _next_good(data, offset + 1)
            continue
        record, offset = found
        yield record


def _next_good(data: bytes, offset: int) -> int:
    """Where the next record that checks out starts, or the end of `data`."""
    while (offset := data.find(MAGIC, offset)) >= 0:
        if _decode_at(data, offset) is not None:
            return offset
        offset += 1
    return len(data)


def scan(directory: Path, totals: Totals | None = None) -> ScanReport:
    """Read every segment, checking each record; damaged stretches are skipped and counted,
    a torn tail is cut off. Never raises for bad content (only for I/O errors). The report's
    totals are `totals` (the state file's) with the records after them added."""
    report = ScanReport(totals=totals or Totals())
    for path in segment_files(directory):
        segment = Segment(path)
        data = path.read_bytes()
        offset = good_end = 0
        while offset < len(data):
            found = _decode_at(data, offset)
            if found is None:
                resume = _next_good(data, offset + 1)
                report.skipped_bytes += resume - offset
                report.damaged += 1
                offset = resume
                continue
            record, offset = found
            good_end = offset
            _note(report, segment, record)
        if good_end < len(data):  # a torn or damaged tail: appends start after the last good
            with path.open("r+b") as file:
                file.truncate(good_end)
                os.fsync(file.fileno())
        segment.size = good_end
        report.segments.append(segment)
    return report


def _note(report: ScanReport, segment: Segment, record: Record) -> None:
    report.records += 1
    report.last_seq = max(report.last_seq, record.seq)
    if not segment.first:
        segment.first, segment.first_time = record.seq, record.time
    segment.last = record.seq
    report.totals.add(record)
    if record.sender:
        seen = report.senders.get(record.sender, 0)
        report.senders[record.sender] = max(seen, record.sender_seq)


class SegmentWriter:
    """The writer thread's files: the active segment's descriptor, rolling and trimming."""

    def __init__(
        self,
        directory: Path,
        segment_bytes: int,
        segments: list[Segment],
        totals: Totals | None = None,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segments = segments  # shared with the loop's side, which only reads it
        self.totals = totals or Totals()  # the loop's side only reads it
        self.last_seq = max((s.last for s in self.segments), default=0)
        self._fd: int | None = None
        self._dirty = False

    def _active(self, first_seq: int) -> int:
        if self._fd is not None and self.segments[-1].size < self.segment_bytes:
            return self._fd
        self._close_active()
        segment = Segment(segment_path(self.directory, first_seq))
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        fsync_directory(self.directory)  # the new file's name survives a power cut
        self.segments.append(segment)
        return self._fd

    def append(self, records: list[Record], data: bytes) -> None:
        fd = self._active(records[0].seq)
        segment = self.segments[-1]
        try:
            write_all(fd, data)
        except OSError:
            os.ftruncate(fd, segment.size)  # a half-written record must not stay
            raise
        self._dirty = True
        segment.size += len(data)
        segment.first = segment.first or records[0].seq
        segment.first_time = segment.first_time or records[0].time
        segment.last = self.last_seq = records[-1].seq
        for record in records:
            self.totals.add(record)

    def sync(self) -> bool:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        return True

    def trim(self, upto: int, next_seq: int, senders: dict[str, int]) -> int:
        """Delete the segments wholly at or below `upto`; the bytes freed. The state is
        written first, whether or not a segment goes: a restart replays only after
        `upto` even from a segment still there."""
        doomed = [s for s in self.segments if s.last and s.last <= upto]
        if self.segments and self.segments[-1] in doomed:
            self._close_active()  # the next append starts a new segment
        try:
            write_state(self.directory, next_seq, senders, upto, self.totals)
        except OSError as error:  # keep the segments: they still hold the dedup history
            log.warning("spool state not written; nothing trimmed", error=str(error))
            return 0
        freed = 0
        for segment in doomed:
            segment.path.unlink(missing_ok=True)
            self.segments.remove(segment)
            freed += segment.size
        fsync_directory(self.directory)
        return freed

    def _close_active(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_active()


# --- the state file: what must outlive the segments a trim deletes --------------------------


def read_state(directory: Path) -> dict[str, Any]:
    """{"next_seq": int, "senders": {id: seq}, "trimmed_upto": int, "totals": Totals}; empty
    if absent or unreadable (the segments still hold what they hold; a lost state file costs dedup
    history, and records already taken in may be replayed once more)."""
    try:
        document = json.loads((directory / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict):
        return {}
    senders = document.get("senders")
    next_seq, trimmed = document.get("next_seq"), document.get("trimmed_upto")
    return {
        "totals": _read_totals(document.get("totals")),
        "next_seq": next_seq if isinstance(next_seq, int) and next_seq > 0 else 1,
        "trimmed_upto": trimmed if isinstance(trimmed, int) and trimmed > 0 else 0,
        "senders": {str(k): v for k, v in (senders or {}).items() if isinstance(v, int) and v >= 0}
        if isinstance(senders, dict)
        else {},
    }


def _read_totals(document: Any) -> Totals:
    """The state's totals; from nothing (an older state file, or damage) if they are not
    well formed: then they count only what the segments still hold."""
    if not isinstance(document, dict):
        return Totals()
    upto, by_source = document.get("upto"), document.get("by_source")
    if not isinstance(upto, int) or upto < 0 or not isinstance(by_source, dict):
        return Totals()
    counts = {str(k): v for k, v in by_source.items() if isinstance(v, int) and v >= 0}
    return Totals(upto, counts)


def write_state(
    directory: Path,
    next_seq: int,
    senders: dict[str, int],
    trimmed: int = 0,
    totals: Totals | None = None,
) -> None:
    """Atomically: a crash leaves the old state or the new one."""
    state = {
        "next_seq": next_seq,
        "senders": senders,
        "trimmed_upto": trimmed,
        "totals": (totals or Totals()).as_json(),
    }
    data = json.dumps(state).encode()
    replace_atomically(directory / STATE_FILE, data)
