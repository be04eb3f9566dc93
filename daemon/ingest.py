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
from dataclasses import dataclass

import structlog

from streamd.connectors import DEFAULT_DECODER, Accepted, DecoderConfig, RawMessage, decode_message

from .metrics import StreamdMetrics

log = structlog.get_logger(__name__)

# About 2M tokens of text: minutes of backlog for a GPU, bounded memory for the host.
QUEUE_MAX_CHARS = 8 * 1024 * 1024
QUEUE_FULL = "queue_full"
SHUTDOWN = "shutdown"  # still queued when the shutdown's drain time ran out


@dataclass(frozen=True)
class Lines:
    """The lines of one message, and the source (connector name) that received it."""

    source: str
    lines: tuple[str, ...]

    @property
    def chars(self) -> int:
        return sum(len(line) + 1 for line in self.lines)


class IngestQueue:
    """A FIFO of Lines bounded in characters; the event loop's side of the engine."""

    def __init__(self, max_chars: int = QUEUE_MAX_CHARS) -> None:
        self.max_chars = max_chars
        self._items: deque[Lines] = deque()
        self._chars = 0
        self._changed = asyncio.Condition()

    @property
    def depth(self) -> int:
        """Messages waiting (one partly taken counts as one)."""
        return len(self._items)

    @property
    def chars(self) -> int:
        return self._chars

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
            self._changed.notify_all()
        return True

    async def take(self, max_chars: int) -> list[Lines]:
        """Wait for lines, then take whole lines up to max_chars (at least one line, however
        long: the decoder bounds a line to max_line_chars).

        A large message is taken in parts: a batch stays near max_chars, so one
        1 MiB blob cannot hold the engine (and `tune`, and shutdown) for minutes.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: bool(self._items))
            batch = self._take_up_to(max_chars)
            self._changed.notify_all()
        return batch

    def _take_up_to(self, max_chars: int) -> list[Lines]:
        batch: list[Lines] = []
        budget = max_chars
        while self._items:
            head = self._items[0]
            if head.chars <= budget:
                item: Lines | None = self._items.popleft()
            else:  # the first line of a batch goes whatever its length
                item = self._split_head(budget, at_least_one=not batch)
            if item is None:
                break
            batch.append(item)
            budget -= item.chars
            self._chars -= item.chars
        return batch

    def _split_head(self, budget: int, *, at_least_one: bool) -> Lines | None:
        """Take the first lines of the head message that fit in budget; None if none does."""
        head = self._items[0]
        count, used = 0, 0
        while count < len(head.lines) and used + len(head.lines[count]) + 1 <= budget:
            used += len(head.lines[count]) + 1
            count += 1
        count = max(count, 1) if at_least_one else count
        if count == 0:
            return None
        if count == len(head.lines):
            return self._items.popleft()
        self._items[0] = Lines(head.source, head.lines[count:])
        return Lines(head.source, head.lines[:count])

    async def wait_empty(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._items)

    def discard_all(self) -> list[Lines]:
        """Empty the queue (shutdown); returns what was in it."""
        items = list(self._items)
        self._items.clear()
        self._chars = 0
        return items


def joined_text(batch: Iterable[Lines]) -> str:
    return "\n".join(line for item in batch for line in item.lines)


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
        decoded = decode_message(message.payload, source, self._decoder)
        if not isinstance(decoded, Accepted):
            reason = decoded.reason.value
            self._metrics.ingest_rejected.inc(source=source, reason=reason)
            self._log_rejection(source, reason, decoded.detail)
            return
        queued = await self.queue.put(Lines(source, decoded.lines), wait=wait_when_full)
        if not queued:
            self.count_dropped(source, QUEUE_FULL)
        self._metrics.queue_depth.set(self.queue.depth)

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
