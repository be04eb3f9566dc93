"""The engine, as the event loop sees it: batches of queued lines, the summary triggers
(tokens, seconds, request, shutdown), and each summary as a numbered SummaryRecord handed
to `on_summary`. The session lives on the one engine thread (EngineThread), which runs
the calls in order; a failed batch or summary is logged, counted and survived."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from .config import Config
from .engine.api import Ingested, SessionStats, Summary, SummaryRecord
from .engine.session_config import SessionConfig
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

if TYPE_CHECKING:  # torch: loaded on the engine thread, when the session is built
    from .engine.session import Session

T = TypeVar("T")
SummaryHandler = Callable[[SummaryRecord], Awaitable[None]]
SessionFactory = Callable[[SessionConfig], "Session"]


class EngineError(RuntimeError):
    """A summary or resize failed inside the session; the message says what happened."""


_Call = tuple[Callable[..., Any], tuple[Any, ...], Future[Any]]  # fn, args, its result


class EngineThread:
    """The one thread the session lives on: submitted calls run there one at a time, in
    order (an ingest, a summary and a `tune` never interleave), and the loop awaits them
    instead of running a forward pass itself."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # daemon=True: a forced exit (second SIGTERM) must not wait for a forward pass
        # that may take seconds, or hang forever in a wedged GPU driver call.
        self._thread = threading.Thread(target=self._run, name="streamd-engine", daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the engine thread; its exception is raised here."""
        if self._stopping:
            raise RuntimeError("the engine thread is stopping")
        future: Future[T] = Future()
        self._calls.put((fn, args, future))
        return await asyncio.wrap_future(future)

    def stop(self, timeout_s: float) -> bool:
        """Let the calls already submitted finish, then end; False if still busy after
        timeout_s (a daemon thread: the process may exit anyway)."""
        if not self._stopping:
            self._stopping = True
            self._calls.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, args, future = call
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            try:
                result = fn(*args)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)


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


def epoch_of(stamp: object) -> float | None:
    """utc_timestamp()'s text back to Unix time; None for anything else."""
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
        session_factory: SessionFactory | None = None,  # tests: one that fails on purpose
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
        self._session_factory = session_factory
        self._session: Session | None = None  # built and used on the engine thread only
        self.token_counter: Callable[[Sequence[str]], int] | None = None  # token_guard.py
        self._evicted = 0  # tokens_evicted already counted in the metrics
        self._summary_lock = asyncio.Lock()
        self._summarized_upto = 0  # stream_tokens of the latest summary
        self._period_start = time.monotonic()  # of the every_seconds period

    # ----------------------------------------------------------------- life

    async def load(self) -> SessionStats:
        """Start the engine thread and load the model there; raises what loading raised."""
        self._thread.start()
        stats = self._observe(await self._thread.call(self._open_session, self.config))
        self._period_start = time.monotonic()
        self.rate.reset()
        return stats

    async def run_on_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Any other call that must run where the session lives (it may import torch)."""
        return await self._thread.call(fn, *args)

    def stop(self, timeout_s: float) -> bool:
        """End the engine thread after the calls already submitted; False if still busy."""
        return self._thread.stop(timeout_s)

    def _open_session(self, config: Config) -> SessionStats:  # on the engine thread
        from .engine.session import Session

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
            result, stats = await self._thread.call(self._ingest_on_thread, text)
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
        self.rate.add(result.tokens)

    def _ingest_on_thread(self, text: str) -> tuple[Ingested, SessionStats]:
        m = self._metrics

        def chunk_done(tokens: int, seconds: float) -> None:  # as each forward finishes
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
            summary, stats = await self._thread.call(self._summarize_on_thread)
        except Exception as error:
            self._metrics.engine_errors.inc(stage="summary")
            log.exception("summary failed", trigger=trigger)
            raise EngineError(f"the summary failed: {type(error).__name__}: {error}") from error
        self._observe(stats)
        self._count_summary(summary)
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

    def _summarize_on_thread(self) -> tuple[Summary, SessionStats]:
        session = self._loaded()
        return session.summarize(), session.stats()

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
            old, new, stats = await self._thread.call(self._resize_on_thread, n)
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
        return await self._thread.call(lambda: self._loaded().snapshot_state())

    async def resume(self, snapshot: Snapshot) -> SessionStats:
        """Re-prefill a snapshot's window; the summary numbering goes on from it.
        A ValueError says why the snapshot does not fit this session."""
        stats = await self._thread.call(self._restore_on_thread, snapshot.session)
        # Tokens evicted before this process started were counted by the one before it.
        self._evicted = stats.tokens_evicted
        self._observe(stats)
        self.summaries_emitted = snapshot.summaries_emitted
        self.last_summary = snapshot.last_summary
        upto = (snapshot.last_summary or {}).get("stream_tokens", 0)
        self._summarized_upto = upto if isinstance(upto, int) else 0
        # `status` shows the last summary's age: "3 emitted, last none yet" contradicted itself.
        self.last_summary_epoch_s = epoch_of((snapshot.last_summary or {}).get("time"))
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
