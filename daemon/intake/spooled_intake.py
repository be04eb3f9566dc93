"""Intake through the spool: a message counts as received once it is on disk.

`SpooledIntake.deliver` decodes a message (a rejected one never reaches the spool),
appends its lines to the spool (daemon/intake/spool.py) and only then counts it received and
queues it for the engine. An acked message (connectors/zmq_acked.py) is first checked
against its sender's last spooled seq: a duplicate (a resend) is dropped and acknowledged
again, a gap waits for the resend. At start, what an earlier run spooled and the session
does not hold yet is replayed into the queue; at shutdown what is still queued stays in
the spool for the next start (counted deferred, not dropped).

Per source, received + replayed = ingested + dropped + rejected + queued + deferred.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import structlog

from streamd.connectors import Accepted, RawMessage
from streamd.connectors.receipts import DurableMessage
from streamd.connectors.zmq_acked import AckedMessage

from ..config import Config
from ..metrics import StreamdMetrics
from .ingest import IngestQueue, Intake, Lines
from .spool import Spool, SpoolWriteError
from .spool_file import Record
from .token_guard import TokenGuard

log = structlog.get_logger(__name__)

SPOOL_FULL = "spool_full"  # a drop-oldest source's message refused by a full spool
MAX_SENDERS = 65536  # acked senders remembered (least recently seen forgotten first)


class SpooledIntake(Intake):
    def __init__(
        self,
        queue: IngestQueue,
        metrics: StreamdMetrics,
        spool: Spool,
        tokens: TokenGuard | None = None,
    ) -> None:
        super().__init__(queue, metrics, tokens=tokens)
        self.spool = spool
        self.replay_done = asyncio.Event()  # sources start delivering after the replay
        self.deferred: dict[str, int] = {}  # per source: left in the spool at shutdown
        self.replayed: dict[str, int] = {}
        self.out_of_order = 0  # acked messages after a gap, left for their resend
        self._taken: list[int] = []  # seqs the engine has (its batch in flight)
        self._deferred_counter = metrics.registry.counter(
            "streamd_spool_deferred_total",
            "Messages still queued at shutdown, left in the spool for the next start.",
            ("source",),
        )
        queue.on_take = self._on_take

    async def open(self, resources: AsyncExitStack) -> None:
        """Open the spool (its records checked), closed with `resources`."""
        await self.spool.open()
        resources.push_async_callback(self.spool.close)

    # ------------------------------------------------------------- replay

    async def replay(self, upto: int | None) -> None:
        """Queue what the spool holds after `upto` (the snapshot's position), then let the
        sources in. Replayed messages count as replayed, not received (an earlier run
        received them)."""
        after = self.spool.start_after(upto)
        try:
            async for record in self.spool.replay(after):
                await self.queue.put(Lines(record.source, record.lines, seq=record.seq), wait=True)
                self.replayed[record.source] = self.replayed.get(record.source, 0) + 1
                self.spool.metrics.replayed.inc(source=record.source)
                self.spool.replayed += 1
            # Past the records without lines (nothing to replay) at the end.
            self.spool.ledger.start_after(self.spool.scan.last_seq)
            self._metrics.queue_depth.set(self.queue.depth)
            if self.spool.replayed:
                log.info("spool replayed", messages=self.spool.replayed, after=after)
        finally:
            self.replay_done.set()

    # ------------------------------------------------------------- deliver

    async def deliver(self, message: RawMessage, *, wait_when_full: bool) -> None:
        source = message.source
        acked = message if isinstance(message, AckedMessage) else None
        if acked is not None and not self._expected(acked):
            return
        decoded = await self._decode(message)
        if not isinstance(decoded, Accepted):
            self._metrics.ingest_messages.inc(source=source)
            reason = decoded.reason.value
            self._metrics.ingest_rejected.inc(source=source, reason=reason)
            self._log_first("message rejected", source, reason, decoded.detail)
            if acked is not None:  # its seq must still be kept: a record without lines
                await self._spool(acked, (), wait=True)
            return
        self._count_repairs(source, decoded)
        seq = await self._spool(message, decoded.lines, wait=wait_when_full)
        if seq is None:
            return
        try:
            await self._queue(Lines(source, decoded.lines, seq=seq), wait_when_full)
        except asyncio.CancelledError:
            self._defer(source)  # spooled: the next start replays it
            raise
        self._metrics.queue_depth.set(self.queue.depth)

    def _expected(self, message: AckedMessage) -> bool:
        """Whether an acked message is the next one of its sender; if not, its receipt
        says what the daemon holds (a duplicate is acknowledged again)."""
        last = self.spool.senders.get(message.sender, 0)
        expected = message.seq == max(last + 1, message.floor)
        if expected:
            return True
        if message.seq <= last:
            self.spool.metrics.duplicates.inc(source=message.source)
        else:
            self.out_of_order += 1  # lines before it were lost in flight: resent later
        # Acknowledged again, once on disk: `last` may have been written a moment ago.
        message.receipt.acked = last
        message.receipt.durable = _durable(self.spool, self.spool.last_seq)
        return False

    async def _spool(self, message: RawMessage, lines: tuple[str, ...], wait: bool) -> int | None:
        """Append; returns the spool seq, or None when the message goes no further."""
        source = message.source
        acked = message if isinstance(message, AckedMessage) else None
        who = (acked.sender, acked.seq) if acked is not None else ("", 0)
        try:
            seq = await self.spool.append(Record(0, source, lines, time.time(), *who), wait=wait)
        except SpoolWriteError:
            if acked is not None:
                return None  # not acknowledged: the sender resends it
            # Without a spool write, a sender without acknowledgements gets what it had
            # before there was a spool: the message in memory, at most once.
            self._metrics.ingest_messages.inc(source=source)
            return 0
        if seq is None:  # full, and this source does not wait
            self._metrics.ingest_messages.inc(source=source)
            self.count_dropped(source, SPOOL_FULL)
            self._log_first("spool full", source, SPOOL_FULL, _FULL, repeats=False)
            return None
        if lines:
            self._metrics.ingest_messages.inc(source=source)
        if acked is not None:
            self._remember(acked.sender, acked.seq)
            acked.receipt.acked = acked.seq
        if isinstance(message, DurableMessage):  # its sender is told once it is on disk
            message.receipt.durable = _durable(self.spool, seq)
        return seq

    def _remember(self, sender: str, seq: int) -> None:
        senders = self.spool.senders
        senders.pop(sender, None)  # re-inserted last: the dict's order is recency
        senders[sender] = seq
        if len(senders) > MAX_SENDERS:
            del senders[next(iter(senders))]

    # ------------------------------------------------------------- the ledger

    def _on_take(self, batch: list[Lines]) -> None:
        """The engine took `batch`: the one before it is done (the ingest loop takes the
        next batch only after the last one's engine call returned)."""
        self.spool.ledger.done(self._taken)
        self._taken = [item.seq for item in batch if item.last and item.seq]
        self.spool.ledger.handed(self._taken)

    def settled(self, item: Lines) -> None:
        if item.seq:
            self.spool.ledger.done([item.seq])

    # ------------------------------------------------------------- shutdown

    def drop_queued(self, reason: str) -> int:
        """At shutdown: what is still queued stays in the spool for the next start."""
        items = self.queue.discard_all()
        for item in items:
            if item.seq:
                self._defer(item.source)
            else:  # never spooled (a failed write): lost, as without a spool
                self.count_dropped(item.source, reason)
        self._metrics.queue_depth.set(0)
        deferred = sum(self.deferred.values())  # a source cancelled mid-delivery added some
        if deferred:
            log.info("messages left in the spool for the next start", messages=deferred)
        return sum(1 for item in items if not item.seq)

    def _defer(self, source: str) -> None:
        self.deferred[source] = self.deferred.get(source, 0) + 1
        self._deferred_counter.inc(source=source)

    def counts(self) -> dict[str, Any]:
        """What the spool adds to the per-source counts: replayed at start, deferred at stop."""
        return {
            "replayed_by_source": dict(self.replayed),
            "deferred_by_source": dict(self.deferred),
        }

    def status(self) -> dict[str, Any]:
        return (
            self.spool.status()
            | self.counts()
            | {
                "out_of_order": self.out_of_order,
                "replaying": not self.replay_done.is_set(),  # sources wait for it to end
            }
        )


def build_intake(
    config: Config, queue: IngestQueue, metrics: StreamdMetrics, tokens: TokenGuard | None
) -> Intake:
    """Through the spool in state_dir (spool.enabled), else straight to the queue; `tokens`
    is the token_heavy check (token_guard.py)."""
    if not config.spool.enabled:
        return Intake(queue, metrics, tokens=tokens)
    spool = Spool(config.state_dir, config.spool, metrics)
    return SpooledIntake(queue, metrics, spool, tokens=tokens)


def spool_of(intake: Intake) -> Spool | None:
    return intake.spool if isinstance(intake, SpooledIntake) else None


def spool_status(intake: Intake) -> dict[str, Any]:
    """The `spool` section of `streamd status`."""
    if not isinstance(intake, SpooledIntake):
        return {"enabled": False}
    return intake.status()


def spool_counts(intake: Intake) -> dict[str, Any]:
    """What the spool adds to a run's per-source counts: {replayed_by_source,
    deferred_by_source}; {} without a spool."""
    return intake.counts() if isinstance(intake, SpooledIntake) else {}


def _durable(spool: Spool, seq: int) -> Callable[[], asyncio.Future[None]]:
    return lambda: asyncio.ensure_future(spool.synced(seq))


_FULL = "the spool is full (spool.max_bytes) and this source does not wait: the message is dropped"
