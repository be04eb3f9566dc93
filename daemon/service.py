"""`streamd run`: the service, in uvicorn's shape: startup(), main_loop(), shutdown().

Signal handlers only set flags: the first SIGTERM/SIGINT asks for the graceful shutdown, a
second one abandons whatever step is running and exits 1 (lifecycle.py holds the exit codes,
the startup error and the helpers that race a step against a signal)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import structlog

from streamd.connectors import last_record

from . import sdnotify
from .config import Config, ConfigError, unknown_environment
from .control.feed import SummaryFeed
from .control.handlers import ControlHandler
from .control.protocol import ControlError
from .control.server import ControlServer, SharedFolder
from .control.status import READY, STARTING, STOPPING, counts_with_repairs, one_line
from .engine.api import SummaryRecord
from .engine.gpu import cuda_uuid
from .intake.ingest import SHUTDOWN, IngestQueue
from .intake.spooled_intake import SpooledIntake, build_intake, spool_counts, spool_of
from .intake.token_guard import token_guard
from .lifecycle import (
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    ExitSignals,
    StartupError,
    as_startup_error,
    cancel,
    exit_now,
    opened,
    race,
)
from .logsetup import configure_logging
from .metrics import MetricsServer, StreamdMetrics
from .scheduling.scheduler import Engine
from .shutdown import CLOSING_RESERVE_S, StopClock, final_summary
from .snapshot_keeper import SnapshotKeeper
from .wiring import (
    Outputs,
    SourceSpec,
    ZmqKeys,
    build_sinks,
    build_sources,
    count_reconnects,
    open_zmq_security,
)

log = structlog.get_logger(__name__)

EXTEND_EVERY_S = 10.0  # while the model loads, ask systemd for more start time this often...
EXTEND_BY_USEC = 30_000_000  # ...this much each time: a load that hangs is still caught
STATUS_EVERY_S = 10.0  # STATUS= refresh
DRAIN_S = 5.0  # at shutdown, queued text is ingested if it takes less than this
ENGINE_JOIN_S = 2.0
FORCED_CLOSE_S = 1.0  # after a second signal, what closing may still take


class Service:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = STARTING
        self.metrics = StreamdMetrics()
        self.feed = SummaryFeed()
        self.queue = IngestQueue(config.ingest.queue_max_chars)
        self.engine = Engine(config, self.metrics, self._publish)
        tokens = token_guard(config, self.engine)
        self.intake = build_intake(config, self.queue, self.metrics, tokens)  # spooled by default
        self.snapshots = SnapshotKeeper(config, self.engine, self.metrics, spool_of(self.intake))
        self.outputs = Outputs([], self.metrics)
        self.sources: list[SourceSpec] = []
        self.zmq_keys = ZmqKeys()  # CURVE keys, read at startup (security.*)
        self.gpu_uuid: str | None = None
        self.signals = ExitSignals()
        self.should_exit = self.signals.should_exit  # set by the first signal
        self.force_exit = self.signals.force_exit  # set by the second
        self.failed = False  # a task that must not end, ended
        self._started = time.monotonic()
        self.engine_abandoned = False  # the engine thread was still busy at the end
        self._resources = AsyncExitStack()  # control, metrics, outputs: closed last
        self._intake = AsyncExitStack()  # sources: closed first
        self._ingest_task: asyncio.Task[None] | None = None
        self._timer_task: asyncio.Task[None] | None = None
        self._source_tasks: list[asyncio.Task[None]] = []
        self._helpers: list[asyncio.Task[None]] = []  # watchdog

    def run(self) -> int:
        """Configure logging and serve until stopped; returns the exit code."""
        configure_logging(self.config.log.level, self.config.log.format)
        try:
            code = asyncio.run(self.serve())
        except StartupError as error:
            if self.engine_abandoned:
                print(f"streamd: {error}", file=sys.stderr)
                exit_now(error.exit_code)
            raise
        if self.force_exit.is_set() or self.engine_abandoned:
            # The engine thread may be inside a forward pass: interpreter teardown could
            # wait for it, or crash under it. Outputs are closed (flushed) by now.
            exit_now(code)
        return code

    async def serve(self) -> int:
        """Raises StartupError when it cannot start, whatever failed (after closing what
        it opened)."""
        self.signals.install()
        try:
            try:
                await self.startup()
            except Exception as error:
                failure = as_startup_error(error)
                log.error("cannot start", error=str(failure))
                await self._close_everything()
                raise failure from None
            if not self.should_exit.is_set():
                await self.main_loop()
            return await self.shutdown()
        finally:
            self.signals.restore()

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def handle_exit(self, signum: int) -> None:
        """Signal handler: flags only."""
        self.signals.handle(signum)

    async def startup(self) -> None:
        log.info("starting", config=self.config.as_dict())
        for name in unknown_environment():
            log.warning("unknown STREAMD_ variable ignored (a typo?)", variable=name)
        sdnotify.status(f"starting: loading {self.config.model.name}")
        self._start_watchdog()
        await self._start_control()
        await self._start_metrics()
        # Before anything binds: a CURVE socket must never take a connection unvetted.
        self.zmq_keys = await open_zmq_security(self.config, self._resources)
        await self._open_outputs()
        if isinstance(self.intake, SpooledIntake):  # checked before any source can deliver
            await opened(self.intake.open(self._resources), "spool.enabled")
        await self._open_sources()
        if not await self._until_exit(self._load_model()):
            return  # a signal came while the model loaded: straight to shutdown
        if not await self._until_exit(self.snapshots.resume()):
            return  # a signal came while the snapshot's window was re-prefilled
        await self._number_summaries_on()
        self._start_tasks()
        self.state = READY
        sdnotify.ready(self.one_line_status())
        log.info("ready", **self._ready_fields())

    async def _number_summaries_on(self) -> None:
        """Summary numbers go on from the summary file's last one: summaries written
        after the last snapshot (then a SIGKILL) must not get their numbers again; and
        its time is the last summary's (status said '2 emitted, last none yet')."""
        path = self.config.outputs.jsonl
        if path is None:
            return
        if (record := await asyncio.to_thread(last_record, path)) is not None:
            self.engine.summaries.go_on_from(int(record["seq"]), record)

    def _start_watchdog(self) -> None:
        if (interval := sdnotify.watchdog_interval_s()) is not None:
            self._helpers.append(asyncio.create_task(sdnotify.watchdog_loop(interval)))

    async def _start_control(self) -> None:
        server = ControlServer(self.config.control.socket, ControlHandler(self).handle)
        try:
            await server.start()
        except SharedFolder as error:  # a setting to change, like any other: exit 2
            raise StartupError(f"control.socket: {error}", EXIT_CONFIG) from None
        except ControlError as error:
            raise StartupError(f"control.socket: {error}") from None
        self._resources.push_async_callback(server.close)

    async def _start_metrics(self) -> None:
        metrics = self.config.metrics
        if not metrics.enabled:
            return
        server = MetricsServer(self.metrics.registry, metrics.host, metrics.port)
        try:
            await server.start()
        except OSError as error:
            raise StartupError(
                f"metrics.port = {metrics.port}: cannot listen on {metrics.host}:{metrics.port} "
                f"({error.strerror}); pick a free port, or 0 to turn the endpoint off"
            ) from None
        self._resources.push_async_callback(server.close)

    async def _open_outputs(self) -> None:
        try:
            sinks = build_sinks(self.config, self.zmq_keys)
        except ConfigError as error:
            raise StartupError(str(error), EXIT_CONFIG) from None
        self._resources.push_async_callback(self.outputs.close)
        for sink, key in sinks:
            await opened(sink.open(), key)
            self.outputs.sinks.append(sink)

    async def _open_sources(self) -> None:
        try:
            specs = build_sources(self.config, self.zmq_keys)
        except ConfigError as error:
            raise StartupError(str(error), EXIT_CONFIG) from None
        for spec in specs:
            await opened(spec.source.open(), spec.key)
            self._intake.push_async_callback(spec.source.close)
            self.sources.append(spec)

    async def _load_model(self) -> None:
        extend = asyncio.create_task(sdnotify.extend_timeout_loop(EXTEND_EVERY_S, EXTEND_BY_USEC))
        try:
            stats = await self.engine.load()
            self.gpu_uuid = await self.engine.run_on_thread(cuda_uuid, stats.device)
        except ValueError as error:  # the model or a setting cannot work: say which
            why = f"cannot use model {self.config.model.name!r}: {error}"
            raise StartupError(why, EXIT_CONFIG) from None
        except Exception as error:
            raise StartupError(f"cannot load model {self.config.model.name!r}: {error}") from None
        finally:
            extend.cancel()

    def _start_tasks(self) -> None:
        self._ingest_task = self._spawn(self.engine.run_ingest(self.queue), "ingest")
        if isinstance(self.intake, SpooledIntake):
            replay = self.intake.replay(self.snapshots.spool_upto)
            self._helpers.append(asyncio.create_task(replay, name="spool replay"))
        self._timer_task = self._spawn(self.engine.run_timer(), "summary timer")
        self._helpers.append(self._spawn(self.snapshots.run(), "snapshots"))
        for spec in self.sources:
            self._source_tasks.append(
                self._spawn(self._run_source(spec), f"source {spec.source.name}")
            )

    async def _run_source(self, spec: SourceSpec) -> None:
        async def deliver(message: Any) -> None:
            await self.intake.deliver(message, wait_when_full=spec.wait_when_full)

        if isinstance(self.intake, SpooledIntake):  # what an earlier run spooled goes first
            await self.intake.replay_done.wait()
        await spec.source.run(deliver)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        return task

    @property
    def _tasks(self) -> list[asyncio.Task[None]]:
        """The ingest, timer and source tasks started so far."""
        tasks = [self._ingest_task, self._timer_task, *self._source_tasks]
        return [task for task in tasks if task is not None]

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """These tasks run until shutdown ends them; one that ends early leaves the
        daemon deaf or mute, so it exits non-zero and systemd restarts it."""
        if task.cancelled() or self.state == STOPPING:
            return
        self.failed = True
        error = task.exception()
        log.error("a daemon task ended; shutting down", task=task.get_name(), exc_info=error)
        self.should_exit.set()

    # ----------------------------------------------------------- main loop

    async def main_loop(self) -> None:
        while not self.should_exit.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.should_exit.wait(), STATUS_EVERY_S)
            sdnotify.status(self.one_line_status())
            count_reconnects(self.sources, self.metrics)

    def one_line_status(self) -> str:
        """systemd's STATUS= (`systemctl status`): state, engine activity, lag, counts."""
        return one_line(self.state, self.engine, self.queue)

    async def shutdown(self) -> int:
        clock = StopClock(self.config.shutdown.timeout_seconds)
        self.engine.gate.stop_triggers()  # and the summary running ends at its next token
        self.state = STOPPING
        sdnotify.stopping(self.one_line_status())
        log.info("stopping", status=self.one_line_status(), budget_s=clock.budget_s)
        await self._close_sources()
        await self._until_forced(self._finish_stream(clock))
        await self._close_everything()
        code = EXIT_FAILURE if self.force_exit.is_set() or self.failed else EXIT_OK
        # The final counts: per source, received + replayed = ingested + dropped + rejected
        # + deferred (the spool's replayed and deferred; the queue is empty by now).
        counts = counts_with_repairs(
            self.metrics, self.source_links(), self.queue.queued_by_source()
        )
        spool, elapsed_s = spool_counts(self.intake), round(clock.elapsed(), 3)
        log.info("stopped", exit_code=code, sources=counts, spool=spool, shutdown_s=elapsed_s)
        return code

    async def _close_sources(self) -> None:
        """Stop intake: no source task runs, no socket takes text after this."""
        await cancel(self._source_tasks)
        await self._intake.aclose()

    async def _finish_stream(self, clock: StopClock) -> None:
        """Ingest what is queued (if quick), then the final summary to every output, each
        step within what the shutdown budget has left."""
        if self._timer_task is not None:
            await cancel([self._timer_task])
        with contextlib.suppress(TimeoutError):  # cut short at the signal: published as is
            await asyncio.wait_for(self.engine.finish_in_flight(), clock.left())
        final_s = self.config.shutdown.final_summary_seconds
        drain_s = min(DRAIN_S, clock.left(final_s + CLOSING_RESERVE_S))
        if self.queue.depth:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.wait_empty(), drain_s)
        dropped = self.intake.drop_queued(SHUTDOWN)
        if dropped:
            log.warning("queued messages dropped at shutdown", messages=dropped, drain_s=drain_s)
        await self._end_ingest(clock.left())
        if self.engine.has_unsummarized_text:
            await final_summary(self.engine, clock, final_s)
        else:
            self.engine.skip("shutdown")
            log.info("no final summary: no text since the last one")
        # After the final summary, which it records; bounded like the rest.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.snapshots.final(), max(clock.left(1.0), 1.0))

    async def _end_ingest(self, limit_s: float) -> None:
        """Close the queue and let the ingest loop end after its batch in flight, which
        may wait behind a `tune` on the engine thread: cancelling it instead would lose
        that batch uncounted. Past limit_s it is cancelled (its batch counted dropped)."""
        await self.queue.close()
        task = self._ingest_task
        if task is None:
            return
        done, _ = await asyncio.wait({task}, timeout=limit_s)
        if not done:
            log.warning("the last batch took longer than allowed", limit_s=round(limit_s, 3))
            await cancel([task])

    async def _close_everything(self) -> None:
        """Sources, then outputs, metrics and control; the engine thread; the watchdog."""
        limit = FORCED_CLOSE_S if self.force_exit.is_set() else None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._close_all_resources(), limit)
        join_s = 0.0 if self.force_exit.is_set() else ENGINE_JOIN_S
        if not await asyncio.to_thread(self.engine.stop, join_s):
            self.engine_abandoned = True
            log.warning("the engine thread is still busy; exiting without it")
        await cancel(self._helpers + self._tasks)

    async def _close_all_resources(self) -> None:
        await self._intake.aclose()
        await self._resources.aclose()

    async def _until_exit(self, work: Awaitable[None]) -> bool:
        """Run `work` unless a signal comes first; True if it completed."""
        return await race(work, self.should_exit)

    async def _until_forced(self, work: Awaitable[None]) -> bool:
        return await race(work, self.force_exit)

    async def _publish(self, record: SummaryRecord) -> None:
        """Where each summary goes: the outputs, then `streamd summaries` followers."""
        document = record.as_json()
        await self.outputs.emit(document)
        self.feed.publish(document)

    def apply_config(self, config: Config) -> None:
        """A config changed live by `tune` (already applied to the session)."""
        self.config = config
        self.engine.config = config  # the summary triggers read it each time round

    def source_links(self) -> dict[str, bool | None]:
        """Source names for status, with whether each broker link is up (None: no link)."""
        count_reconnects(self.sources, self.metrics)  # status shows the reconnects up to now
        return {spec.source.name: getattr(spec.source, "connected", None) for spec in self.sources}

    def _ready_fields(self) -> dict[str, Any]:
        stats = self.engine.stats
        return {
            "model": stats.model if stats else None,
            "device": stats.device if stats else None,
            "max_capacity": stats.max_capacity if stats else None,
            "sources": [spec.source.name for spec in self.sources],
            "outputs": self.outputs.names,
            "control": str(self.config.control.socket),
            "startup_s": round(self.uptime_s, 3),
        }
