"""The engine, as the event loop sees it: batches of queued lines, the summary triggers
(tokens, seconds, request, shutdown), and each summary as a numbered SummaryRecord handed
to `on_summary`. The session lives on the one engine thread (EngineThread), which runs
the calls in order; a failed batch or summary is logged, counted and survived."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from ..config import Config
from ..engine.api import Deadline, Ingested, SessionStats, Summary, SummaryRecord
from ..engine.session_config import SessionConfig
from ..intake.ingest import ENGINE_ERROR, SHUTDOWN, IngestQueue, Lines, joined_text, messages_ending
from ..metrics import Counter, StreamdMetrics
from ..snapshot import SessionState, Snapshot
from .engine_thread import (
    INGESTING,
    LOADING,
    OTHER,
    RESUMING,
    SNAPSHOT,
    SUMMARIZING,
    TUNING,
    EngineError,
    EngineThread,
)
from .engine_watch import Gauges, engine_status
from .fairness import CHARS_PER_TOKEN, lag_status
from .summary_gate import SummaryGate
from .tally import IngestTally, RateWindow, SummaryTally, utc_timestamp

log = structlog.get_logger(__name__)

BATCH_CHUNKS = 2  # text per engine call: about this many prefill chunks
TIMER_TICK_S = 1.0  # longest sleep of the seconds trigger: a `tune` is seen within this
GAUGES_EVERY_S = 1.0  # the engine and lag gauges, refreshed this often while ingest runs
PREVIEW_CHARS = 120  # of the first line of a failed batch, in the log

if TYPE_CHECKING:  # torch: loaded on the engine thread, when the session is built
    from ..engine.session import Session

T = TypeVar("T")
SummaryHandler = Callable[[SummaryRecord], Awaitable[None]]
SessionFactory = Callable[[SessionConfig], "Session"]


class Engine:
    def __init__(
        self,
        config: Config,
        metrics: StreamdMetrics,
        on_summary: SummaryHandler,
        session_factory: SessionFactory | None = None,  # tests: one that fails on purpose
    ) -> None:
        self.config = config  # `tune` replaces it; the triggers read config.summary each time
        self.stats: SessionStats | None = None  # the session after the last engine call
        self.rate = RateWindow()
        self.tokens = IngestTally()  # stream tokens and chunks, as each forward finishes
        self.summaries = SummaryTally()  # numbering and the last one, over restarts
        self._metrics = metrics
        self._on_summary = on_summary
        self._thread = EngineThread()
        self._session_factory = session_factory
        self._session: Session | None = None  # built and used on the engine thread only
        self.token_counter: Callable[[Sequence[str]], int] | None = None  # token_guard.py
        self._evicted = 0  # tokens_evicted already counted in the metrics
        self._summarized_upto = 0  # stream_tokens of the latest summary
        self._period_start = time.monotonic()  # of the every_seconds period
        self._queue: IngestQueue | None = None  # run_ingest's: whether ingest is behind
        self._batch_since: float | None = None  # arrival of the batch in flight's oldest
        self.gate = SummaryGate(self._thread, metrics, self._write_summary, lambda: self.config)
        self._gauges = Gauges(self._thread, metrics.scheduling)

    # ----------------------------------------------------------------- life

    async def load(self) -> SessionStats:
        """Start the engine thread and load the model there; raises what loading raised."""
        self._thread.start()
        opened = await self._thread.call(self._open_session, self.config, activity=LOADING)
        stats = self._observe(opened)
        self.tokens.started_at(stats.tokens_ingested)
        self._period_start = time.monotonic()
        self.rate.reset()
        return stats

    async def run_on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Any other call that must run where the session lives (it may import torch)."""
        return await self._thread.call(fn, *args, activity=OTHER)

    def stop(self, timeout_s: float) -> bool:
        """End the engine thread after the calls already submitted; False if still busy."""
        return self._thread.stop(timeout_s)

    def _open_session(self, config: Config) -> SessionStats:  # on the engine thread
        from ..engine.session import Session

        self._session = (self._session_factory or Session)(SessionConfig.of(config))
        loaded = getattr(self._session, "loaded", None)  # a test's stand-in may have none
        self.token_counter = loaded.token_counter() if loaded is not None else None
        return self._session.stats()

    def _loaded(self) -> Session:
        if self._session is None:
            raise RuntimeError("the session is not loaded yet")
        return self._session

    def _observe(self, stats: SessionStats) -> SessionStats:
        """The session's state after an engine call, into `stats` and the metrics."""
        self.stats = stats
        m = self._metrics
        m.kv_cache_usage.set(stats.used / stats.max_capacity)
        m.cache_max_capacity.set(stats.max_capacity)
        # Growing the window can make evicted tokens visible again; a counter only rises.
        if stats.tokens_evicted > self._evicted:
            m.evicted_tokens.inc(stats.tokens_evicted - self._evicted)
            self._evicted = stats.tokens_evicted
        return stats

    @property
    def summaries_emitted(self) -> int:
        """The seq of the last summary record, over restarts."""
        return self.summaries.emitted

    @property
    def last_summary(self) -> dict[str, Any] | None:
        """The latest summary record's JSON (a snapshot holds it)."""
        return self.summaries.last

    @property
    def last_summary_epoch_s(self) -> float | None:
        return self.summaries.last_epoch_s

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
        self._queue = queue
        gauges = asyncio.create_task(self._refresh_gauges_forever(queue))
        try:
            while True:
                head = queue.oldest_arrival()  # the batch's first message, if one waits
                if not (batch := await queue.take(self._batch_chars())):
                    break
                self._batch_since = time.monotonic() if head is None else head
                self._metrics.queue_depth.set(queue.depth)
                await self._ingest(batch)
                self._batch_since = None
                if self._tokens_due() and not queue.closed:  # closing: the final one follows
                    await self.gate.triggered("tokens", self._tokens_due, self.behind)
        finally:
            gauges.cancel()

    def _tokens_due(self) -> bool:
        every = self.config.summary.every_tokens
        return bool(every) and self.unsummarized_tokens >= every

    def _batch_chars(self) -> int:
        chunk = self.stats.chunk if self.stats else self.config.cache.chunk
        return BATCH_CHUNKS * chunk * CHARS_PER_TOKEN

    async def _ingest(self, batch: list[Lines]) -> None:
        text = joined_text(batch)
        try:
            result, stats = await self._thread.call(
                self._ingest_on_thread, text, activity=INGESTING
            )
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
        self._observe(stats)

    def _ingest_on_thread(self, text: str) -> tuple[Ingested, SessionStats]:
        m = self._metrics

        def chunk_done(tokens: int, seconds: float) -> None:  # as each forward finishes
            self.tokens.add(tokens)
            self.rate.add(tokens)
            m.prefill_chunk.observe(seconds)
            m.ingest_tokens.inc(tokens)

        def retried(outcome: str) -> None:
            m.ingest_retries.inc(outcome=outcome)

        session = self._loaded()
        return session.ingest(text, chunk_done, retried), session.stats()

    @staticmethod
    def _count(batch: list[Lines], counter: Counter, **labels: str) -> None:
        for source, messages in messages_ending(batch).items():
            counter.inc(messages, source=source, **labels)

    # ------------------------------------------------------------ summaries

    async def run_timer(self) -> None:
        """The every_seconds trigger, until cancelled: at each tick, summarize if new
        text arrived; any summary starts the period again. A summary held back by the
        share is asked for again at the next tick."""
        while True:
            every = self.config.summary.every_seconds  # each time round: `tune` changes it
            wait = self._period_start + every - time.monotonic()
            if not every or wait > 0:
                await asyncio.sleep(min(wait, TIMER_TICK_S) if every else TIMER_TICK_S)
            elif await self.gate.triggered(
                "seconds", lambda: self.has_unsummarized_text, self.behind
            ):
                self._period_start = time.monotonic()
            else:
                await asyncio.sleep(TIMER_TICK_S)

    @property
    def behind(self) -> bool:
        """Text waits in the ingest queue."""
        return self._queue is not None and self._queue.depth > 0

    def skip(self, trigger: str) -> None:
        """A trigger fired with no new text since the last summary: no summary, counted."""
        self.gate.skip(trigger)

    async def finish_in_flight(self) -> None:
        """Shutdown: no triggered summary starts any more; the one in flight is cut short
        (it ends at its last whole sentence and is published) and awaited."""
        await self.gate.finish()

    def activity(self) -> dict[str, Any]:
        """`status`'s engine section: what the engine is doing now, and for how long."""
        return engine_status(self._thread, self.gate, self.config)

    def lag(self, queue: IngestQueue) -> dict[str, Any]:
        """`status`'s lag section (the gauges refreshed on the way)."""
        lag = lag_status(queue, self.config.engine.max_lag_seconds, self._batch_since)
        self._gauges.refresh(lag)
        return lag

    async def _refresh_gauges_forever(self, queue: IngestQueue) -> None:
        while True:
            self.lag(queue)
            await asyncio.sleep(GAUGES_EVERY_S)

    async def summarize(self, trigger: str, max_seconds: float | None = None) -> SummaryRecord:
        """A summary now (request, shutdown), never held back by the share; one already
        in flight is joined (merged) instead. max_seconds: its time budget (default:
        summary.max_seconds). Raises EngineError if the session failed."""
        return await self.gate.asked(trigger, max_seconds)

    async def _write_summary(self, trigger: str, deadline: Deadline) -> SummaryRecord:
        """One summary on the engine thread, numbered into a record and handed over."""
        try:
            summary, stats = await self._thread.call(
                self._summarize_on_thread, deadline, activity=SUMMARIZING
            )
        except Exception as error:
            self._metrics.engine_errors.inc(stage="summary")
            log.exception("summary failed", trigger=trigger)
            raise EngineError(f"the summary failed: {type(error).__name__}: {error}") from error
        self._observe(stats)
        self._count_summary(summary)
        self._summarized_upto = summary.stream_tokens
        self._period_start = time.monotonic()
        now = time.time()
        record = SummaryRecord.of(summary, self.summaries_emitted + 1, utc_timestamp(now), trigger)
        self.summaries.wrote(record.as_json(), now)
        self._metrics.summaries.inc(trigger=trigger)
        self._metrics.last_summary_time.set(now)
        if summary.time_limited:
            self._metrics.scheduling.summaries_time_limited.inc()
            log.info("summary stopped by its time budget", trigger=trigger, seq=record.seq)
        await self._on_summary(record)
        return record

    def _summarize_on_thread(self, deadline: Deadline) -> tuple[Summary, SessionStats]:
        session = self._loaded()
        return session.summarize(deadline=deadline), session.stats()

    def _count_summary(self, summary: Summary) -> None:
        m = self._metrics
        m.time_to_first_token.observe(summary.ttft_s)
        if summary.generated_tokens > 1:  # TPOT is undefined for a single token
            m.inter_token_latency.observe(summary.tpot_s)
        m.summary_latency.observe(summary.latency_s)
        m.generation_tokens.inc(summary.generated_tokens)
        checked = summary.verification
        if checked is not None:
            m.summary_claims.inc(checked.supported, result="supported")
            m.summary_claims.inc(checked.checked - checked.supported, result="unsupported")
            m.summary_sentences_removed.inc(len(checked.removed_sentences))

    # --------------------------------------------------------------- tuning

    async def set_max_capacity(self, n: int) -> tuple[int, int]:
        """Resize the cache live. A ValueError (ConfigError) says why a value
        cannot work; anything else is an EngineError."""
        try:
            old, new, stats = await self._thread.call(self._resize_on_thread, n, activity=TUNING)
        except ValueError:
            raise
        except Exception as error:
            self._metrics.engine_errors.inc(stage="tune")
            log.exception("resizing the cache failed", max_capacity=n)
            raise EngineError(f"resizing failed: {type(error).__name__}: {error}") from error
        self._observe(stats)
        return old, new

    def _resize_on_thread(self, n: int) -> tuple[int, int, SessionStats]:
        session = self._loaded()
        old, new = session.set_max_capacity(n)
        return old, new, session.stats()

    # ------------------------------------------------------------ snapshots

    async def capture_state(self) -> SessionState:
        """The session's window ids and counters, taken between two engine calls."""
        return await self._thread.call(lambda: self._loaded().snapshot_state(), activity=SNAPSHOT)

    async def resume(self, snapshot: Snapshot) -> SessionStats:
        """Re-prefill a snapshot's window; the summary numbering goes on from it.
        A ValueError says why the snapshot does not fit this session."""
        stats = await self._thread.call(
            self._restore_on_thread, snapshot.session, activity=RESUMING
        )
        # Tokens evicted before this process started were counted by the one before it.
        self._evicted = stats.tokens_evicted
        self._observe(stats)
        self.tokens.started_at(stats.tokens_ingested)  # the window is not this run's ingest
        # `status` shows the last summary's age: "3 emitted, last none yet" contradicted itself.
        self.summaries.go_on_from(snapshot.summaries_emitted, snapshot.last_summary)
        upto = (snapshot.last_summary or {}).get("stream_tokens", 0)
        self._summarized_upto = upto if isinstance(upto, int) else 0
        return stats

    def _restore_on_thread(self, state: SessionState) -> SessionStats:
        session = self._loaded()
        session.restore(state)
        return session.stats()


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
