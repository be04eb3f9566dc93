"""The engine, as the event loop sees it: batches of queued lines, the summary triggers
(tokens, seconds, request, shutdown), and each summary as a numbered SummaryRecord handed
to `on_summary`. What touches the session runs on the engine thread; a failed batch or
summary is logged, counted and survived (a batch is first retried in smaller pieces)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from .config import Config
from .engine.api import SessionStats, SummaryRecord
from .engine.thread import EngineThread
from .engine.worker import SessionWorker
from .ingest import ENGINE_ERROR, SHUTDOWN, IngestQueue, Lines, joined_text, messages_ending
from .metrics import Counter, StreamdMetrics
from .snapshot import SessionState, Snapshot

log = structlog.get_logger(__name__)

# The loop has no tokenizer; English log text runs about 4 characters per token.
CHARS_PER_TOKEN = 4
BATCH_CHUNKS = 2  # text per engine call: about this many prefill chunks
RATE_WINDOW_S = 60.0  # `status` shows the ingest rate over the last minute
TIMER_TICK_S = 1.0  # longest sleep of the seconds trigger: a `tune` is seen within this
PREVIEW_CHARS = 120  # of the first line of a failed batch, in the log

T = TypeVar("T")
SummaryHandler = Callable[[SummaryRecord], Awaitable[None]]


class EngineError(RuntimeError):
    """A summary or resize failed inside the session; the message says what happened."""


class RateWindow:
    """Tokens per second over the last window_s seconds."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._since = time.monotonic()
        self._events: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Start the window now (when the model is loaded: loading is not ingest time)."""
        self._since = time.monotonic()
        self._events.clear()

    def add(self, tokens: int) -> None:
        self._events.append((time.monotonic(), tokens))

    def per_second(self) -> float:
        now = time.monotonic()
        while self._events and self._events[0][0] < now - self.window_s:
            self._events.popleft()
        # In the first minute, divide by the time that has passed, not a whole minute.
        span = min(self.window_s, max(now - self._since, 1e-3))
        return sum(tokens for _, tokens in self._events) / span


def utc_timestamp(epoch_s: float) -> str:
    """ISO 8601 in UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Engine:
    def __init__(
        self,
        config: Config,
        metrics: StreamdMetrics,
        on_summary: SummaryHandler,
        worker: SessionWorker | None = None,  # tests pass one that fails on purpose
    ) -> None:
        self.config = config  # `tune` replaces it; the triggers read config.summary each time
        self.stats: SessionStats | None = None  # the session after the last engine call
        self.rate = RateWindow()
        self.summaries_emitted = 0
        self.last_summary_epoch_s: float | None = None
        self.last_summary: dict[str, Any] | None = None  # the latest record's JSON (snapshots)
        self._metrics = metrics
        self._on_summary = on_summary
        self._thread = EngineThread()
        self._worker = worker or SessionWorker(metrics)
        self._summary_lock = asyncio.Lock()
        self._summarized_upto = 0  # stream_tokens of the latest summary
        self._period_start = time.monotonic()  # of the every_seconds period

    # ----------------------------------------------------------------- life

    async def load(self) -> SessionStats:
        """Start the engine thread and load the model there; raises what loading raised."""
        self._thread.start()
        stats = await self._thread.call(self._worker.load, self.config)
        self.stats = stats
        self._period_start = time.monotonic()
        self.rate.reset()
        return stats

    async def run_on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Any other call that must run where the session lives (it may import torch)."""
        return await self._thread.call(fn, *args)

    def stop(self, timeout_s: float) -> bool:
        """End the engine thread after the calls already submitted; False if still busy."""
        return self._thread.stop(timeout_s)

    @property
    def has_unsummarized_text(self) -> bool:
        """Stream tokens were ingested since the latest summary (a batch in flight is
        not counted yet: the shutdown waits for it before it asks)."""
        return self.unsummarized_tokens > 0

    @property
    def unsummarized_tokens(self) -> int:
        """Stream tokens ingested since the latest summary."""
        ingested = self.stats.tokens_ingested if self.stats else 0
        return ingested - self._summarized_upto

    # --------------------------------------------------------------- ingest

    async def run_ingest(self, queue: IngestQueue) -> None:
        """Take batches from the queue and ingest them, until the queue is closed and
        empty. Every message taken is counted: ingested, or dropped with the reason."""
        while batch := await queue.take(self._batch_chars()):
            self._metrics.queue_depth.set(queue.depth)
            await self._ingest(batch)
            if self._tokens_due() and not queue.closed:  # closing: the final summary follows
                await self._summarize_if(self._tokens_due, "tokens")

    def _tokens_due(self) -> bool:
        every = self.config.summary.every_tokens
        return bool(every) and self.unsummarized_tokens >= every

    def _batch_chars(self) -> int:
        chunk = self.stats.chunk if self.stats else self.config.cache.chunk
        return BATCH_CHUNKS * chunk * CHARS_PER_TOKEN

    async def _ingest(self, batch: list[Lines]) -> None:
        text = joined_text(batch)
        try:
            result = await self._thread.call(self._worker.ingest, text)
        except asyncio.CancelledError:  # a forced shutdown: the batch may never run
            self._count(batch, self._metrics.ingest_dropped, reason=SHUTDOWN)
            raise
        except Exception:
            self._metrics.engine_errors.inc(stage="ingest")
            self._count(batch, self._metrics.ingest_dropped, reason=ENGINE_ERROR)
            log.exception("ingest failed; the batch is skipped", **_batch_context(batch))
            return
        if result.retried:
            log.warning("ingest recovered by the retry in smaller pieces", **_batch_context(batch))
        self._count(batch, self._metrics.ingest_ingested)
        self.stats = result.stats
        self.rate.add(result.tokens)

    @staticmethod
    def _count(batch: list[Lines], counter: Counter, **labels: str) -> None:
        for source, messages in messages_ending(batch).items():
            counter.inc(messages, source=source, **labels)

    # ------------------------------------------------------------ summaries

    async def run_timer(self) -> None:
        """The every_seconds trigger, until cancelled: at each tick, summarize if new
        text arrived; any summary starts the period again."""
        while True:
            every = self.config.summary.every_seconds  # each time round: `tune` changes it
            wait = self._period_start + every - time.monotonic()
            if not every or wait > 0:
                await asyncio.sleep(min(wait, TIMER_TICK_S) if every else TIMER_TICK_S)
                continue
            self._period_start = time.monotonic()
            await self._summarize_if(lambda: self.has_unsummarized_text, "seconds")

    async def _summarize_if(self, still_due: Callable[[], bool], trigger: str) -> None:
        """A triggered summary; skipped if another one made it moot meanwhile, and a
        failure is logged and counted, not raised (the stream goes on)."""
        async with self._summary_lock:
            if not still_due():
                self.skip(trigger)
                return
            with contextlib.suppress(EngineError):  # logged and counted where it happened
                await self._summarize_locked(trigger)

    def skip(self, trigger: str) -> None:
        """A trigger fired with no new text since the last summary: no summary, counted."""
        self._metrics.summaries_skipped.inc(trigger=trigger)

    async def summarize(self, trigger: str) -> SummaryRecord:
        """A summary now (request, shutdown); raises EngineError if the session failed."""
        async with self._summary_lock:
            return await self._summarize_locked(trigger)

    async def _summarize_locked(self, trigger: str) -> SummaryRecord:
        try:
            summary, self.stats = await self._thread.call(self._worker.summarize)
        except Exception as error:
            self._metrics.engine_errors.inc(stage="summary")
            log.exception("summary failed", trigger=trigger)
            raise EngineError(f"the summary failed: {type(error).__name__}: {error}") from error
        self._summarized_upto = summary.stream_tokens
        self._period_start = time.monotonic()
        self.summaries_emitted += 1
        self.last_summary_epoch_s = time.time()
        stamp = utc_timestamp(self.last_summary_epoch_s)
        record = SummaryRecord.of(summary, self.summaries_emitted, stamp, trigger)
        self.last_summary = record.as_json()
        self._metrics.summaries.inc(trigger=trigger)
        self._metrics.last_summary_time.set(self.last_summary_epoch_s)
        await self._on_summary(record)
        return record

    # --------------------------------------------------------------- tuning

    async def set_max_capacity(self, n: int) -> tuple[int, int]:
        """Resize the cache live. A ValueError (ConfigError) says why a value
        cannot work; anything else is an EngineError."""
        try:
            resized = await self._thread.call(self._worker.set_max_capacity, n)
        except ValueError:
            raise
        except Exception as error:
            self._metrics.engine_errors.inc(stage="tune")
            log.exception("resizing the cache failed", max_capacity=n)
            raise EngineError(f"resizing failed: {type(error).__name__}: {error}") from error
        self.stats = resized.stats
        return resized.old, resized.new

    # ------------------------------------------------------------ snapshots

    async def capture_state(self) -> SessionState:
        """The session's window ids and counters, taken between two engine calls."""
        return await self._thread.call(self._worker.snapshot_state)

    async def resume(self, snapshot: Snapshot) -> SessionStats:
        """Re-prefill a snapshot's window; the summary numbering goes on from it.
        A ValueError says why the snapshot does not fit this session."""
        self.stats = await self._thread.call(self._worker.restore, snapshot.session)
        self.summaries_emitted = snapshot.summaries_emitted
        self.last_summary = snapshot.last_summary
        upto = (snapshot.last_summary or {}).get("stream_tokens", 0)
        self._summarized_upto = upto if isinstance(upto, int) else 0
        return self.stats


def _batch_context(batch: list[Lines]) -> dict[str, Any]:
    """What the log says about a failed batch: where it came from and how big it was."""
    first = batch[0].lines[0] if batch and batch[0].lines else ""
    return {
        "sources": sorted({item.source for item in batch}),
        "messages": len(batch),
        "lines": sum(len(item.lines) for item in batch),
        "chars": sum(item.chars for item in batch),
        "first_line": first[:PREVIEW_CHARS],
    }
