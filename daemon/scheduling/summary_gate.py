"""Which summary runs when (event loop side): one summary in flight at a time, which every
trigger that fires meanwhile joins (merged, counted) instead of queueing another; the
share of engine time triggered summaries may take while ingest is behind (fairness.py);
and each summary's deadline, which a shutdown brings forward."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ..config import Config
from ..engine.api import Deadline, SummaryRecord
from ..metrics import StreamdMetrics
from .engine_thread import INGESTING, SUMMARIZING, EngineError, EngineThread
from .fairness import SummaryShare

# Writes one summary under a deadline and hands back its record (Engine._write_summary).
Write = Callable[[str, Deadline], Awaitable[SummaryRecord]]


class SummaryGate:
    def __init__(
        self,
        thread: EngineThread,
        metrics: StreamdMetrics,
        write: Write,
        config: Callable[[], Config],  # the engine's, read each time: `tune` replaces it
    ) -> None:
        self._config = config
        self._thread = thread
        self._metrics = metrics
        self._write = write
        self._share = SummaryShare()
        self._in_flight: asyncio.Task[SummaryRecord] | None = None
        self.trigger: str | None = None  # of the summary in flight
        self._deadline: Deadline | None = None  # of the summary in flight
        self.deferred: set[str] = set()  # triggers held back by the share, counted once
        self._stopping = False  # shutdown: no triggered summary starts any more

    async def triggered(self, trigger: str, still_due: Callable[[], bool], behind: bool) -> bool:
        """A tokens or seconds trigger fired. Merged into the summary in flight if there
        is one; skipped (counted) if nothing is new; held back (False: ask again later)
        while ingest is behind and summaries had their share of engine time. A failed
        summary is logged and counted where it happened, not raised: the stream goes on."""
        waited = trigger in self.deferred
        self.deferred.discard(trigger)
        if self._stopping:
            return True  # the shutdown writes the final summary
        if self._in_flight is not None:
            self._metrics.scheduling.summaries_merged.inc(trigger=trigger)
            return True
        if not still_due():
            self.skip(trigger)
            return True
        share = self._config().engine.summary_share
        if not self._share.allows(share, behind, self._thread.busy(INGESTING)):
            self.deferred.add(trigger)
            if not waited:  # once per wait, not once per tick
                self._metrics.scheduling.summaries_deferred.inc(trigger=trigger)
            return False
        with contextlib.suppress(EngineError):  # logged and counted where it happened
            await self._start(trigger)
        return True

    def skip(self, trigger: str) -> None:
        """A trigger fired with no new text since the last summary: no summary, counted."""
        self._metrics.summaries_skipped.inc(trigger=trigger)

    async def asked(self, trigger: str, seconds: float | None = None) -> SummaryRecord:
        """A summary asked for (request, shutdown): never held back by the share; one
        already in flight is joined (merged) instead. seconds: its time budget (default
        summary.max_seconds)."""
        if self._in_flight is not None:
            self._metrics.scheduling.summaries_merged.inc(trigger=trigger)
            return await asyncio.shield(self._in_flight)
        return await self._start(trigger, seconds)

    def owed_s(self) -> float:
        """Ingest seconds owed before a triggered summary may start while behind."""
        return self._share.owed_s(self._thread.busy(INGESTING))

    def stop_triggers(self) -> None:
        """Shutdown: no triggered summary starts any more, and the one in flight is cut
        short (it ends at its last whole sentence, and is published)."""
        self._stopping = True
        self.cut_short()

    async def finish(self) -> None:
        """stop_triggers(), then wait for the summary in flight."""
        self.stop_triggers()
        if self._in_flight is not None:
            await asyncio.gather(asyncio.shield(self._in_flight), return_exceptions=True)

    def cut_short(self) -> None:
        """The summary running stops at its next token."""
        if self._deadline is not None:
            self._deadline.cut()

    async def _start(self, trigger: str, seconds: float | None = None) -> SummaryRecord:
        """Start the summary in flight and await it. Shielded: a caller that is cancelled
        (the timer at shutdown) leaves it running, for the shutdown to await."""
        task = asyncio.create_task(self._run(trigger, seconds))
        self._in_flight, self.trigger = task, trigger
        task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[SummaryRecord]) -> None:
        if self._in_flight is task:
            self._in_flight = self.trigger = None
        if not task.cancelled():
            task.exception()  # retrieved: its callers got it, and there may be none

    async def _run(self, trigger: str, seconds: float | None) -> SummaryRecord:
        config = self._config()
        self._deadline = deadline = Deadline(
            config.summary.max_seconds if seconds is None else seconds
        )
        before = self._thread.busy(SUMMARIZING)
        try:
            return await self._write(trigger, deadline)
        finally:
            self._deadline = None
            spent = self._thread.busy(SUMMARIZING) - before
            share = config.engine.summary_share
            self._share.spent(share, spent, self._thread.busy(INGESTING))
