"""From the sources to the engine: decode, count, and a bounded queue of lines.

`Intake.deliver` (on the event loop) counts each message a source receives, decodes it, and
counts it rejected by reason or queues it in `IngestQueue`, bounded in characters. When the
queue is full, each source's policy (block or drop-oldest) decides: DESIGN.md, "The daemon".
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import structlog

from streamd.connectors import DEFAULT_DECODER, Accepted, DecoderConfig, RawMessage, Rejected

from ..config import QUEUE_MAX_CHARS
from ..metrics import StreamdMetrics
from .token_guard import TokenGuard, decode_weighed, settle

log = structlog.get_logger(__name__)

QUEUE_FULL = "queue_full"  # evicted (drop-oldest) or refused for want of room
SHUTDOWN = "shutdown"  # still queued when the shutdown's drain time ran out
ENGINE_ERROR = "engine_error"  # in a batch that failed on the engine thread (after its retry)
# Payloads above this are decoded off the loop; below, a thread hop costs more than decoding.
DECODE_OFF_LOOP_BYTES = 64 * 1024
# What the decoder repairs in accepted messages (streamd_ingest_repaired_total{kind}): the
# counts of Accepted's fields of these names (sequences, characters, lines).
REPAIR_KINDS = ("replaced", "stripped", "cut")


@dataclass(frozen=True)
class Lines:
    """The lines of one message (or of a part of it), and the source (connector name) that
    received it. A message taken in parts is counted (ingested or dropped) once: on the
    part that holds its last line, `last`."""

    source: str
    lines: tuple[str, ...]
    last: bool = True
    seq: int = 0  # its spool position (0: not spooled); its parts share it
    chars: int = field(init=False, compare=False)  # each line and its newline

    def __post_init__(self) -> None:
        object.__setattr__(self, "chars", sum(len(line) + 1 for line in self.lines))


@dataclass(eq=False, slots=True)
class _Entry:
    """A queued message: its arrival number orders the per-source queues into one FIFO."""

    seq: int
    item: Lines
    evictable: bool  # put by a drop-oldest source, and not begun by the engine
    at: float = field(default_factory=time.monotonic)  # when it came: `status` shows the lag


# Bounded in characters, not messages: one message may be a 1 MiB blob or a single line.
class IngestQueue:
    """A FIFO of Lines bounded in characters; the event loop's side of the engine.

    Messages wait in one deque per source, in arrival order overall (a message's
    number is its place), so that a drop-oldest source finds the oldest message
    it may evict without scanning past others' messages.

    close() ends it: `take` then returns what is left and after that an empty batch,
    which tells the ingest loop to stop (after the batch it has in flight).
    """

    def __init__(self, max_chars: int = QUEUE_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._fifos: dict[str, deque[_Entry]] = {}  # per source, oldest first
        self._arrivals = 0  # the next message's number
        self._depth = 0
        self._chars = 0
        self._evictable_chars = 0
        self._evictable_count: dict[str, int] = {}  # per source
        # A message taken in parts stays at the head until its last line is taken:
        # these say how much of it is gone (no re-slicing the rest each time).
        self._head_lines = 0
        self._head_chars = 0
        self._closed = False
        self._changed = asyncio.Condition()
        # Told of each batch taken (the spool's ledger: what the engine now has).
        self.on_take: Callable[[list[Lines]], None] | None = None

    @property
    def depth(self) -> int:
        """Messages waiting (one partly taken counts as one)."""
        return self._depth

    @property
    def chars(self) -> int:
        return self._chars

    @property
    def closed(self) -> bool:
        return self._closed

    def oldest_arrival(self) -> float | None:
        """When (time.monotonic()) the oldest message waiting came; None if none waits."""
        return min((fifo[0].at for fifo in self._fifos.values() if fifo), default=None)

    def queued_by_source(self) -> dict[str, int]:
        """Messages waiting, per source (one partly taken counts as one)."""
        return {source: len(fifo) for source, fifo in self._fifos.items() if fifo}

    def _has_room(self, item: Lines) -> bool:
        # An empty queue takes any message, so that one larger than the bound still goes.
        return not self._depth or self._chars + item.chars <= self.max_chars

    async def put(self, item: Lines, *, wait: bool) -> bool:
        """Queue `item`; when full, wait for room (wait=True) or refuse it (returns False).
        A message put this way is never evicted."""
        async with self._changed:
            if not wait and not self._has_room(item):
                return False
            await self._changed.wait_for(lambda: self._has_room(item))
            self._append(item, evictable=False)
        return True

    async def put_evicting(self, item: Lines) -> tuple[bool, list[Lines]]:
        """Queue `item` without waiting (drop-oldest): when full, evict the oldest evictable
        messages until it fits. Returns (queued, the messages evicted); when evicting all
        that may go would not make room, nothing is evicted and `item` is refused."""
        async with self._changed:
            evicted = self._make_room(item)
            if evicted is None:
                return False, []
            self._append(item, evictable=True)
        return True, evicted

    def _append(self, item: Lines, *, evictable: bool) -> None:
        self._fifos.setdefault(item.source, deque()).append(_Entry(self._arrivals, item, evictable))
        self._arrivals += 1
        self._depth += 1
        self._chars += item.chars
        if evictable:
            self._evictable_chars += item.chars
            self._evictable_count[item.source] = self._evictable_count.get(item.source, 0) + 1
        self._changed.notify_all()

    def _no_longer_evictable(self, entry: _Entry) -> None:
        """Evicted, taken, or begun by the engine (from then on it is the engine's)."""
        if entry.evictable:
            entry.evictable = False
            self._evictable_chars -= entry.item.chars
            self._evictable_count[entry.item.source] -= 1

    def _make_room(self, item: Lines) -> list[Lines] | None:
        """Evict the oldest evictable messages until `item` fits; None if it cannot."""
        if self._has_room(item):
            return []
        shortfall = self._chars + item.chars - self.max_chars
        everything_may_go = self._evictable_chars == self._chars  # then even a huge item fits
        if self._evictable_chars < shortfall and not everything_may_go:
            return None
        evicted = []
        while not self._has_room(item):
            evicted.append(self._evict_oldest())
        return evicted

    def _evict_oldest(self) -> Lines:
        fifo, entry = min(self._evictable_firsts(), key=lambda pair: pair[1].seq)
        fifo.remove(entry)  # near the front of its deque
        self._no_longer_evictable(entry)
        self._depth -= 1
        self._chars -= entry.item.chars
        return entry.item

    def _evictable_firsts(self) -> Iterator[tuple[deque[_Entry], _Entry]]:
        """Each source's oldest evictable message. Sources with none are skipped without
        a look; for a drop-oldest source it is its first message, or its second when the
        first is one the engine has begun."""
        for source, fifo in self._fifos.items():
            if self._evictable_count.get(source):
                yield fifo, next(entry for entry in fifo if entry.evictable)

    def _head(self) -> tuple[deque[_Entry], _Entry]:
        """The oldest message of all, and its source's deque (the queue is not empty)."""
        fifo = min((f for f in self._fifos.values() if f), key=lambda f: f[0].seq)
        return fifo, fifo[0]

    async def take(self, max_chars: int) -> list[Lines]:
        """Wait for lines, then take whole lines up to max_chars (at least one line, however
        long: the decoder bounds a line to max_line_chars). Empty once closed and empty.

        A large message is taken in parts: a batch stays near max_chars, so one
        1 MiB blob cannot hold the engine (and `tune`, and shutdown) for minutes.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._depth) or self._closed)
            batch = self._take_up_to(max_chars)
            self._changed.notify_all()
        if self.on_take is not None:
            self.on_take(batch)
        return batch

    async def close(self) -> None:
        """No more batches after what is queued: a waiting `take` returns empty."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _take_up_to(self, max_chars: int) -> list[Lines]:
        batch: list[Lines] = []
        budget = max_chars
        while self._depth:
            # The first line of a batch goes whatever its length.
            item = self._take_from_head(budget, at_least_one=not batch)
            if item is None:
                break
            batch.append(item)
            budget -= item.chars
            self._chars -= item.chars
        return batch

    def _take_from_head(self, budget: int, *, at_least_one: bool) -> Lines | None:
        """The head message's next lines that fit in budget (all of them: the message
        leaves the queue); None if none fits."""
        fifo, entry = self._head()
        head = entry.item
        if self._head_lines == 0 and head.chars <= budget:
            return self._pop_head(fifo)
        start = end = self._head_lines
        used = 0
        while end < len(head.lines) and used + len(head.lines[end]) + 1 <= budget:
            used += len(head.lines[end]) + 1
            end += 1
        if end == start:
            if not at_least_one:
                return None
            used, end = len(head.lines[start]) + 1, start + 1
        if end == len(head.lines):
            self._pop_head(fifo)
            return Lines(head.source, head.lines[start:], last=head.last, seq=head.seq)
        self._no_longer_evictable(entry)  # begun
        self._head_lines, self._head_chars = end, self._head_chars + used
        return Lines(head.source, head.lines[start:end], last=False, seq=head.seq)

    def _pop_head(self, fifo: deque[_Entry]) -> Lines:
        entry = fifo.popleft()
        self._no_longer_evictable(entry)
        self._depth -= 1
        self._head_lines = self._head_chars = 0
        return entry.item

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._depth)

    def discard_all(self) -> list[Lines]:
        """Empty the queue (shutdown); returns what was in it, oldest first (of a message
        partly taken, the rest)."""
        entries = sorted((e for fifo in self._fifos.values() for e in fifo), key=lambda e: e.seq)
        items = [entry.item for entry in entries]
        if items and self._head_lines:
            head = items[0]
            rest = head.lines[self._head_lines :]
            items[0] = Lines(head.source, rest, last=head.last, seq=head.seq)
        self._fifos.clear()
        self._evictable_count.clear()
        self._depth = self._chars = self._evictable_chars = 0
        self._head_lines = self._head_chars = 0
        return items


def joined_text(batch: Iterable[Lines]) -> str:
    return "\n".join(line for item in batch for line in item.lines)


def messages_ending(batch: Iterable[Lines]) -> dict[str, int]:
    """{source: messages whose last line is in `batch`}: what the batch counts as ingested
    (or dropped), so that a message taken in parts counts once."""
    counts: dict[str, int] = {}
    for item in batch:
        if item.last:
            counts[item.source] = counts.get(item.source, 0) + 1
    return counts


class Intake:
    """The `deliver` callbacks of the sources: decode, count by source and reason, queue."""

    def __init__(
        self,
        queue: IngestQueue,
        metrics: StreamdMetrics,
        decoder: DecoderConfig = DEFAULT_DECODER,
        tokens: TokenGuard | None = None,  # the token_heavy check; None: off
    ) -> None:
        self.queue = queue
        self._metrics = metrics
        self._decoder = decoder
        self._tokens = tokens
        self._reported: set[tuple[str, str]] = set()

    async def deliver(self, message: RawMessage, *, wait_when_full: bool) -> None:
        """Count, decode and queue one message. wait_when_full: the source's policy is
        block (wait for room); else drop-oldest."""
        # Labels come from RawMessage.source, the connector's own name: an envelope's
        # "source" is chosen by the sender and would let it mint unbounded label sets.
        source = message.source
        self._metrics.ingest_messages.inc(source=source)
        try:
            decoded = await self._decode(message)
            if not isinstance(decoded, Accepted):
                reason = decoded.reason.value
                self._metrics.ingest_rejected.inc(source=source, reason=reason)
                self._log_first("message rejected", source, reason, decoded.detail)
                return
            self._count_repairs(source, decoded)
            await self._queue(Lines(source, decoded.lines), wait_when_full)
        except asyncio.CancelledError:
            # Shutdown cancels a PULL source that waits for room: its message was counted
            # received, so it is counted dropped too (received = ingested + dropped +
            # rejected + queued, per source).
            self.count_dropped(source, SHUTDOWN)
            raise
        self._metrics.queue_depth.set(self.queue.depth)

    async def _queue(self, item: Lines, wait_when_full: bool) -> None:
        # block (ZeroMQ PULL's default): wait for room. The receive loop stops, libzmq's queue
        # fills and the senders block (`streamd send` reports the lines it could not send).
        # Nothing is lost.
        if wait_when_full:
            await self.queue.put(item, wait=True)
            return
        # drop-oldest (ZeroMQ SUB and MQTT always; PULL if configured): evict the oldest queued
        # messages of drop-oldest sources, so the freshest lines win. A publisher does not wait
        # for us, and an MQTT client that stops reading only moves the pile into its own
        # unbounded in-memory queue.
        queued, evicted = await self.queue.put_evicting(item)
        # In a flood this runs for every message: only the first drop per source is logged.
        for old in evicted:
            self.settled(old)
            self.count_dropped(old.source, QUEUE_FULL)
            self._log_first("ingest queue full", old.source, QUEUE_FULL, _EVICTED, repeats=False)
        if not queued:
            self.settled(item)
            self.count_dropped(item.source, QUEUE_FULL)
            self._log_first("ingest queue full", item.source, QUEUE_FULL, _REFUSED, repeats=False)

    def _count_repairs(self, source: str, accepted: Accepted) -> None:
        for kind in REPAIR_KINDS:  # Accepted's counts of the same names
            count = getattr(accepted, kind)
            if count:
                self._metrics.ingest_repaired.inc(count, source=source, kind=kind)

    async def _decode(self, message: RawMessage) -> Accepted | Rejected:
        """A large payload is decoded (UTF-8, JSON, line splitting) on a worker thread:
        a 1 MiB blob must not stall the loop, its control socket and its watchdog. Text
        that may be token-heavy is tokenized on one too (token_guard.py)."""
        decode = functools.partial(decode_weighed, message, self._decoder, self._tokens)
        big = len(message.payload) > DECODE_OFF_LOOP_BYTES
        return await settle(await asyncio.to_thread(decode) if big else decode(), self._tokens)

    def _log_first(
        self, event: str, source: str, reason: str, detail: str, *, repeats: bool = True
    ) -> None:
        # The first of a kind is a warning; repeats only count (a bad sender in a loop
        # must not flood the journal), and show at debug level if `repeats`.
        first = (source, reason) not in self._reported
        if not first and not repeats:
            return
        self._reported.add((source, reason))
        report = log.warning if first else log.debug
        report(
            event,
            source=source,
            reason=reason,
            detail=detail,
            note="further ones of this kind are only counted" if first else None,
        )

    def settled(self, item: Lines) -> None:
        """A message dropped by a policy, counted: the spool need not keep it."""

    def count_dropped(self, source: str, reason: str, messages: int = 1) -> None:
        self._metrics.ingest_dropped.inc(messages, source=source, reason=reason)

    def drop_queued(self, reason: str) -> int:
        """Count everything still queued as dropped (shutdown); returns how many messages."""
        items = self.queue.discard_all()
        for item in items:
            self.count_dropped(item.source, reason)
        self._metrics.queue_depth.set(0)
        return len(items)


_EVICTED = "the oldest queued message of a drop-oldest source was dropped to make room"
_REFUSED = "a new message was dropped: only messages that must not be evicted fill the queue"
