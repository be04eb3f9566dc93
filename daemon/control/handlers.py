"""The daemon's answers to control requests: status, tune, summarize, summaries.

The server (server.py) parses and replies; this decides, on the event loop: the
session is reached only through the Engine, which runs the work on the engine thread.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from ..config import Config, ConfigError
from ..engine.gpu import NvmlReader
from ..engine.session_config import window_for
from ..intake.spooled_intake import spool_status
from ..scheduling.scheduler import EngineError
from .protocol import TUNE_KEYS, ControlError, check_args
from .replies import accept
from .status import READY, STARTING, status_document

if TYPE_CHECKING:
    from ..intake.ingest import IngestQueue, Intake
    from ..metrics import StreamdMetrics
    from ..scheduling.scheduler import Engine
    from ..wiring import Outputs
    from .feed import SummaryFeed


class SnapshotStatus(Protocol):
    """The snapshot keeper, as far as `status` reads it."""

    def status(self) -> dict[str, Any]: ...


class ServiceView(Protocol):
    """What the handlers read and call on the service (Service has it all). Read-only
    members: a live config change goes through apply_config()."""

    @property
    def state(self) -> str: ...
    @property
    def uptime_s(self) -> float: ...
    @property
    def gpu_uuid(self) -> str | None: ...
    @property
    def config(self) -> Config: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def queue(self) -> IngestQueue: ...
    @property
    def metrics(self) -> StreamdMetrics: ...
    @property
    def outputs(self) -> Outputs: ...
    @property
    def snapshots(self) -> SnapshotStatus: ...
    @property
    def intake(self) -> Intake: ...
    @property
    def feed(self) -> SummaryFeed: ...
    def source_links(self) -> dict[str, bool | None]: ...
    def apply_config(self, config: Config) -> None: ...


class ControlHandler:
    def __init__(self, service: ServiceView, nvml: NvmlReader | None = None) -> None:
        self.service = service
        self._nvml = nvml or NvmlReader()
        # One tune at a time: each builds on the config the one before it left (two at
        # once would both start from the same config, and the later apply undo the other).
        self._tune_lock = asyncio.Lock()

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        if cmd == "status":
            check_args(cmd, args, ())
            return await self.status()
        if cmd == "tune":
            check_args(cmd, args, TUNE_KEYS)
            return await self.tune(args)
        if cmd == "summarize":
            check_args(cmd, args, ())
            return await self.summarize()
        if cmd == "summaries":
            return await self.service.feed.handle(args)
        raise ControlError(f"{cmd}: not a command this daemon handles")

    async def status(self) -> dict[str, Any]:
        s = self.service
        gpu = await self._nvml.status(s.gpu_uuid)  # NVML may block: off the loop, bounded
        return status_document(
            state=s.state,
            uptime_s=s.uptime_s,
            engine=s.engine,
            queue=s.queue,
            metrics=s.metrics,
            sources=s.source_links(),
            outputs=s.outputs,
            gpu=gpu,
            snapshot=s.snapshots.status(),
            spool=spool_status(s.intake),
        )

    def _require_ready(self, cmd: str) -> None:
        state = self.service.state
        if state == STARTING:
            raise ControlError(
                f"{cmd}: streamd is starting (loading the model); retry when `streamd status` "
                "says ready"
            )
        if state != READY:
            raise ControlError(f"{cmd}: streamd is {state}")

    async def _accept(self) -> None:
        """Valid and queued: the client hears so now, and what the engine is doing; the
        result follows (however long the engine takes, the client knows we run)."""
        await accept({"engine": self.service.engine.activity()})

    async def summarize(self) -> dict[str, Any]:
        self._require_ready("summarize")
        await self._accept()
        try:
            return (await self.service.engine.summarize("request")).as_json()
        except EngineError as error:
            raise ControlError(f"summarize: {error}; see the daemon's log") from error

    async def tune(self, args: dict[str, Any]) -> dict[str, Any]:
        """Check the new values like a config load, resize the cache, then switch."""
        if not args:
            raise ControlError(f"tune: give at least one of {', '.join(TUNE_KEYS)}")
        self._require_ready("tune")
        if self._tune_lock.locked():  # queued behind another tune, which may wait a while
            await self._accept()
        async with self._tune_lock:
            return await self._tune_locked(args)

    async def _tune_locked(self, args: dict[str, Any]) -> dict[str, Any]:
        s = self.service
        old = s.config
        try:
            new = old.with_overrides({TUNE_KEYS[name]: value for name, value in args.items()})
        except ConfigError as error:
            raise ControlError(f"tune: {error}") from None
        changed: dict[str, list[Any]] = {}
        if "max_capacity" in args:
            changed["max_capacity"] = list(await self._resize(new.cache.max_capacity))
        s.apply_config(new)
        if "summary_every_tokens" in args:
            changed["summary_every_tokens"] = [
                old.summary.every_tokens,
                new.summary.every_tokens,
            ]
        if "summary_every_seconds" in args:
            changed["summary_every_seconds"] = [
                old.summary.every_seconds,
                new.summary.every_seconds,
            ]
        return {"changed": changed}

    async def _resize(self, max_capacity: int) -> tuple[int, int]:
        stats = self.service.engine.stats
        try:
            if stats is not None:  # what the loop can tell on its own, it tells at once
                window_for(max_capacity, stats.pinned)
            await self._accept()
            return await self.service.engine.set_max_capacity(max_capacity)
        except ValueError as error:  # the session's reason: the prefix, the trained context
            raise ControlError(f"tune: {error}") from None
        except EngineError as error:
            raise ControlError(f"tune: {error}; see the daemon's log") from error
