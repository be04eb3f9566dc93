"""Snapshots as the event loop runs them: resume at start, a timer, one at shutdown.

`resume()` once, before READY; `run()` once the stream moved and snapshot.every_seconds
have passed since the last snapshot; `final()` after the final summary. The file itself
is daemon/snapshot.py's work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from . import snapshot as store
from .config import Config
from .engine.prompts import DEFAULT_SYSTEM_PROMPT
from .intake.spool import Spool
from .metrics import StreamdMetrics
from .scheduling.scheduler import Engine
from .snapshot import Expected, SessionState, Snapshot

log = structlog.get_logger(__name__)

PRESSURE_PAUSE_S = 1.0  # between snapshots taken because the spool is full
TICK_S = 1.0  # how often the timer looks whether a snapshot is due
UNSNAPSHOTTED_TRIM_S = 1.0  # without snapshots, the spool is trimmed this often


@dataclass(frozen=True)
class WindowSeen:
    """The window of the last snapshot written, or of the session just resumed."""

    tokens: int
    digest: str  # snapshot.window_digest of its ids
    position: int  # absolute position of the next stream token then

    @classmethod
    def of(cls, state: SessionState) -> WindowSeen:
        return cls(len(state.window_ids), state.digest, state.position)


class SnapshotKeeper:
    def __init__(
        self, config: Config, engine: Engine, metrics: StreamdMetrics, spool: Spool | None = None
    ) -> None:
        self.path = config.state_dir / store.FILE_NAME
        self.settings = config.snapshot
        self._spool = spool  # trimmed up to what each snapshot written holds
        self.spool_upto: int | None = None  # the spool position of the session resumed
        self._engine = engine
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # one snapshot at a time, in order
        # Snapshots start once the session is whole (fresh or resumed): a resume cut short
        # by a signal must not overwrite the good snapshot with half a window.
        self._session_whole = False
        # (stream tokens, summaries) of the last one: tokens as each chunk is prefilled, so a
        # long batch under way is movement (status said 'nothing new since' beside it).
        self._taken_at: tuple[int, int] | None = None
        self.window: WindowSeen | None = None
        self.resumed: dict[str, Any] | None = None
        self.problem: str | None = None  # why the snapshot found at start was not used
        self.write_error: str | None = None  # why the last write failed (None once one works)
        self.last_written_epoch_s: float | None = None
        self._whole_epoch_s = time.time()  # when the session was whole: the first interval's start
        self._taking_since: float | None = None  # a snapshot under way: captured, then written
        self._failed_epoch_s = 0.0  # the last failed write: the next try waits an interval

    # -------------------------------------------------------------- start

    async def resume(self) -> None:
        """Re-prefill the snapshot if there is a usable one; never raises for a bad one."""
        if self.settings.enabled:
            loaded = await asyncio.to_thread(store.load, self.path, self._expected())
            if loaded.problem is not None:
                self._set_problem(loaded.problem, loaded.moved_to)
            if loaded.snapshot is not None:
                await self._resume_from(loaded.snapshot)
            elif loaded.problem is None:
                log.info("no snapshot to resume; starting fresh", path=str(self.path))
        stats = self._engine.stats
        if stats is not None:
            self._taken_at = (self._engine.tokens.total, self._engine.summaries_emitted)
        self._whole_epoch_s = time.time()
        self._session_whole = True

    def _expected(self) -> Expected:
        config = self._engine.config
        prompt = config.cache.system_prompt or DEFAULT_SYSTEM_PROMPT
        return Expected(config.model.name, config.cache.max_capacity, store.text_digest(prompt))

    async def _resume_from(self, snapshot: Snapshot) -> None:
        try:
            await self._engine.resume(snapshot)
            state = await self._engine.capture_state()  # what the session holds now
        except ValueError as error:  # it does not fit this session after all
            await self._set_aside(store.INCOMPATIBLE, str(error))
            return
        except Exception as error:  # the re-prefill failed (the session is left empty)
            log.exception("resuming the snapshot failed")
            await self._set_aside(store.FAILED, f"{type(error).__name__}: {error}")
            return
        self.window = WindowSeen.of(state)
        self.spool_upto = snapshot.spool_upto
        age = max(0.0, time.time() - snapshot.written_at)
        self.resumed = {
            "window_tokens": len(state.window_ids),
            "tokens_ingested": state.tokens_ingested,
            "position": state.position,
            "summaries_emitted": snapshot.summaries_emitted,
            "snapshot_age_s": round(age, 3),
        }
        log.info("resumed", path=str(self.path), **self.resumed)

    async def _set_aside(self, kind: str, why: str) -> None:
        moved = await asyncio.to_thread(store.set_aside, self.path, kind, why)
        self._set_problem(moved.problem or why, moved.moved_to)

    def _set_problem(self, problem: str, moved_to: Path | None) -> None:
        self.problem = problem
        where = str(moved_to) if moved_to is not None else None
        log.warning("snapshot not used; starting fresh", problem=problem, moved_to=where)

    # -------------------------------------------------------------- timer

    async def run(self) -> None:
        """A snapshot once the stream moved and every_seconds have passed since the last
        one (looked at each second: a timer that skipped an unchanged stream and looked
        again an interval later let `status` show a snapshot twice its interval old,
        #11 observation 14), and one sooner when the spool is full (a snapshot lets it
        trim); until final(). Without snapshots the spool is trimmed as the engine takes
        messages in."""
        if not self.settings.enabled:
            await self._trim_without_snapshots()
            return
        pressure = self._spool.pressure if self._spool is not None else asyncio.Event()
        while not self._stop.is_set():
            woke = await _first_of(self._stop, pressure, TICK_S)
            if self._stop.is_set():
                return
            if woke is pressure:
                pressure.clear()
                await self.take("spool full")
                await asyncio.sleep(PRESSURE_PAUSE_S)  # at most one such snapshot a second...
                if self._spool is not None and self._spool.waiting:
                    pressure.set()  # ...for as long as the spool stays full
            elif self._due():
                await self.take("periodic")

    def _due(self) -> bool:
        """The stream moved and every_seconds passed since the last snapshot (or start, or
        the last failed try)."""
        every = self.settings.every_seconds
        since = max(self.last_written_epoch_s or self._whole_epoch_s, self._failed_epoch_s)
        return bool(every) and time.time() - since >= every and self._moved()

    async def _trim_without_snapshots(self) -> None:
        while not self._stop.is_set():
            if self._spool is not None:
                self._spool.trim(self._spool.ledger.done_mark)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), UNSNAPSHOTTED_TRIM_S)

    async def final(self) -> None:
        """At shutdown, after the final summary: no more timer snapshots, then the last one."""
        self._stop.set()
        if not self.settings.enabled and self._spool is not None:
            self._spool.trim(self._spool.ledger.done_mark)
        await self.take("shutdown")

    async def take(self, why: str) -> None:
        """A snapshot now, if the stream moved since the last one; failures are logged."""
        async with self._lock:
            if self._moved():
                await self._write(why)

    def _moved(self) -> bool:
        stats = self._engine.stats
        if not (self.settings.enabled and self._session_whole) or stats is None:
            return False
        return (self._engine.tokens.total, self._engine.summaries_emitted) != self._taken_at

    async def _write(self, why: str) -> None:
        engine = self._engine
        # Read before the capture: a summary that lands meanwhile is newer than the window,
        # and a resume then counts its tokens as not yet summarized (the safe side).
        emitted, last = engine.summaries_emitted, engine.last_summary
        # Read just before the capture is submitted: the engine thread runs its calls in
        # order, so the capture holds every message handed to it by now (spool_ledger.py).
        upto = self._spool.ledger.handed_mark if self._spool is not None else None
        self._taking_since = time.time()
        try:
            # Captured on the engine thread between two engine calls, so a snapshot never holds
            # half a batch; encoding and the file write run in a worker thread.
            state = await engine.capture_state()
            config = engine.config.as_dict()
            snapshot = Snapshot(state, emitted, last, config, time.time(), spool_upto=upto)
            size = await asyncio.to_thread(store.save, self.path, snapshot)
        except Exception as error:
            # The previous snapshot stays; _taken_at is unchanged, so the timer tries again
            # an interval later.
            self._failed_epoch_s = time.time()
            self._metrics.snapshots.inc(result="failed")
            self.write_error = f"writing {self.path} failed: {type(error).__name__}: {error}"
            log.warning("snapshot not written; the previous one stays", why=why, error=str(error))
            return
        finally:
            self._taking_since = None
        self._taken_at = (state.tokens_ingested, emitted)
        if self._spool is not None and upto is not None:
            self._spool.trim(upto)  # the snapshot on disk holds all of it now
        self.write_error = None
        self.window = WindowSeen.of(state)
        self.last_written_epoch_s = snapshot.written_at
        self._metrics.snapshots.inc(result="written")
        self._metrics.last_snapshot_time.set(snapshot.written_at)
        log.info(
            "snapshot written",
            why=why,
            window_tokens=len(state.window_ids),
            position=state.position,
            bytes=size,
        )

    # ------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        """The `snapshot` section of `streamd status`."""
        last, taking = self.last_written_epoch_s, self._taking_since
        window = self.window
        return {
            "enabled": self.settings.enabled,
            "path": str(self.path),
            "every_seconds": self.settings.every_seconds,
            "written": int(self._metrics.snapshots.value(result="written")),
            "failed": int(self._metrics.snapshots.value(result="failed")),
            "last_age_s": None if last is None else round(max(0.0, time.time() - last), 3),
            # Nothing new since: the timer skips writing the same state again, so an old
            # `last_age_s` beside a short `every_seconds` is not a keeper that stopped.
            "up_to_date": last is not None and not self._moved(),
            # Due (the stream moved and the interval passed) and not yet written: the timer
            # takes it within TICK_S, unless the capture waits for the engine thread.
            "due": self._due(),
            "taking_for_s": None if taking is None else round(max(0.0, time.time() - taking), 3),
            # The window of the last snapshot written or resumed: digest and count of its ids.
            "window_tokens": window.tokens if window else None,
            "window_digest": window.digest if window else None,
            "window_position": window.position if window else None,
            "resumed": self.resumed,
            "problem": self.problem,
            "write_error": self.write_error,
        }


async def _first_of(
    stop: asyncio.Event, pressure: asyncio.Event, timeout_s: float | None
) -> asyncio.Event | None:
    """Wait until one of the events is set (which one) or timeout_s passes (None)."""
    waits = {asyncio.ensure_future(e.wait()): e for e in (stop, pressure)}
    try:
        done, _ = await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[next(iter(done))] if done else None
