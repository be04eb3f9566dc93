"""From the sources to the engine: decode, count, and a bounded queue of lines.

Every message a source receives goes through `Intake.deliver` (on the event
loop): it is counted as received, decoded (connectors.decode_message), counted
as rejected with the reason, or queued. The queue is bounded in characters,
not messages, because one message may be a 1 MiB blob or a single line.

When the queue is full, what happens depends on the source:
- ZeroMQ PULL waits for room: the receive loop stops, libzmq's queue fills and
  the senders block (`streamd send` reports the lines it could not send).
  Nothing is lost silently.
- ZeroMQ SUB and MQTT drop the message and count it (reason queue_full):
  a publisher does not wait for us, and an MQTT client that stops reading
  only moves the pile into its own unbounded in-memory queue.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import structlog

from streamd.connectors import (
    DEFAULT_DECODER,
    Accepted,
    DecoderConfig,
    RawMessage,
    Rejected,
    decode_message,
)

from .metrics import StreamdMetrics

log = structlog.get_logger(__name__)

# About 2M tokens of text: minutes of backlog for a GPU, bounded memory for the host.
QUEUE_MAX_CHARS = 8 * 1024 * 1024
QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"  # still queued when the shutdown's drain time ran out
ENGINE_ERROR = "engine_error"  # in a batch that failed on the engine thread
# Payloads above this are decoded off the loop; below, a thread hop costs more than decoding.
DECODE_OFF_LOOP_BYTES = 64 * 1024


@dataclass(frozen=True)
class Lines:
    """The lines of one message (or of a part of it), and the source (connector name) that
    received it. A message taken in parts is counted (ingested or dropped) once: on the
    part that holds its last line, `last`."""

    source: str
    lines: tuple[str, ...]
    last: bool = True
    chars: int = field(init=False, compare=False)  # each line and its newline

    def __post_init__(self) -> None:
        object.__setattr__(self, "chars", sum(len(line) + 1 for line in self.lines))


class IngestQueue:
    """A FIFO of Lines bounded in characters; the event loop's side of the engine.

    close() ends it: `take` then returns what is left and after that an empty batch,
    which tells the ingest loop to stop (after the batch it has in flight).
    """

    def __init__(self, max_chars: int = QUEUE_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._items: deque[Lines] = deque()
        self._chars = 0
        # A message taken in parts stays at the head until its last line is taken:
        # these say how much of it is gone (no re-slicing the rest each time).
        self._head_lines = 0
        self._head_chars = 0
        self._by_source: dict[str, int] = {}  # messages waiting, per source
        self._closed = False
        self._changed = asyncio.Condition()

    @property
    def depth(self) -> int:
        """Messages waiting (one partly taken counts as one)."""
        return len(self._items)

    @property
    def chars(self) -> int:
        return self._chars

    @property
    def closed(self) -> bool:
        return self._closed

    def queued_by_source(self) -> dict[str, int]:
        """Messages waiting, per source (one partly taken counts as one)."""
        return {source: count for source, count in self._by_source.items() if count}

    def _has_room(self, item: Lines) -> bool:
        # An empty queue takes any message, so that one larger than the bound still goes.
        return not self._items or self._chars + item.chars <= self.max_chars

    async def put(self, item: Lines, *, wait: bool) -> bool:
        """Queue `item`; when full, wait for room (wait=True) or refuse it (returns False)."""
        async with self._changed:
            if not wait and not self._has_room(item):
                return False
            await self._changed.wait_for(lambda: self._has_room(item))
            self._items.append(item)
            self._chars += item.chars
            self._by_source[item.source] = self._by_source.get(item.source, 0) + 1
            self._changed.notify_all()
        return True

    async def take(self, max_chars: int) -> list[Lines]:
        """Wait for lines, then take whole lines up to max_chars (at least one line, however
        long: the decoder bounds a line to max_line_chars). Empty once closed and empty.

        A large message is taken in parts: a batch stays near max_chars, so one
        1 MiB blob cannot hold the engine (and `tune`, and shutdown) for minutes.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items) or self._closed)
            batch = self._take_up_to(max_chars)
            self._changed.notify_all()
        return batch

    async def close(self) -> None:
        """No more batches after what is queued: a waiting `take` returns empty."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _take_up_to(self, max_chars: int) -> list[Lines]:
        batch: list[Lines] = []
        budget = max_chars
        while self._items:
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
        head = self._items[0]
        if self._head_lines == 0 and head.chars <= budget:
            return self._pop_head()
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
            self._pop_head()
            return Lines(head.source, head.lines[start:], last=head.last)
        self._head_lines, self._head_chars = end, self._head_chars + used
        return Lines(head.source, head.lines[start:end], last=False)

    def _pop_head(self) -> Lines:
        head = self._items.popleft()
        self._head_lines = self._head_chars = 0
        self._by_source[head.source] -= 1
        return head

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._items)

    def discard_all(self) -> list[Lines]:
        """Empty the queue (shutdown); returns what was in it (of a message partly taken,
        the rest)."""
        items = list(self._items)
        if items and self._head_lines:
            head = items[0]
            items[0] = Lines(head.source, head.lines[self._head_lines :], last=head.last)
        self._items.clear()
        self._chars = self._head_lines = self._head_chars = 0
        self._by_source.clear()
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
    ) -> None:
        self.queue = queue
        self._metrics = metrics
        self._decoder = decoder
        self._reported: set[tuple[str, str]] = set()

    async def deliver(self, message: RawMessage, *, wait_when_full: bool) -> None:
        # Labels come from RawMessage.source, the connector's own name: an envelope's
        # "source" is chosen by the sender and would let it mint unbounded label sets.
        source = message.source
        self._metrics.ingest_messages.inc(source=source)
        try:
            decoded = await self._decode(message)
            if not isinstance(decoded, Accepted):
                reason = decoded.reason.value
                self._metrics.ingest_rejected.inc(source=source, reason=reason)
                self._log_rejection(source, reason, decoded.detail)
                return
            queued = await self.queue.put(Lines(source, decoded.lines), wait=wait_when_full)
        except asyncio.CancelledError:
            # Shutdown cancels a PULL source that waits for room: its message was counted
            # received, so it is counted dropped too (received = ingested + dropped +
            # rejected + queued, per source).
            self.count_dropped(source, SHUTDOWN)
            raise
        if not queued:
            self.count_dropped(source, QUEUE_FULL)
        self._metrics.queue_depth.set(self.queue.depth)

    async def _decode(self, message: RawMessage) -> Accepted | Rejected:
        """A large payload is decoded (UTF-8, JSON, line splitting) on a worker thread:
        a 1 MiB blob must not stall the loop, its control socket and its watchdog."""
        if len(message.payload) > DECODE_OFF_LOOP_BYTES:
            return await asyncio.to_thread(
                decode_message, message.payload, message.source, self._decoder
            )
        return decode_message(message.payload, message.source, self._decoder)

    def _log_rejection(self, source: str, reason: str, detail: str) -> None:
        # The first of a kind is a warning; repeats only count (a bad sender in a loop
        # must not flood the journal), and show at debug level.
        first = (source, reason) not in self._reported
        self._reported.add((source, reason))
        report = log.warning if first else log.debug
        report(
            "message rejected",
            source=source,
            reason=reason,
            detail=detail,
            note="further rejections of this kind are only counted" if first else None,
        )

    def count_dropped(self, source: str, reason: str, messages: int = 1) -> None:
        self._metrics.ingest_dropped.inc(messages, source=source, reason=reason)

    def drop_queued(self, reason: str) -> int:
        """Count everything still queued as dropped (shutdown); returns how many messages."""
        items = self.queue.discard_all()
        for item in items:
            self.count_dropped(item.source, reason)
        self._metrics.queue_depth.set(0)
        return len(items)
