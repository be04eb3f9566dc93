"""Every summary output behind its own bounded queue, written by a task of its own.

A reader that stops reading (stdout into a full pipe, a hung disk) used to hold the summary
path, and through it the whole daemon (#11, observation 5). Now each output has a queue of
at most MAX_RECORDS records: when it is full the oldest queued record is dropped and
counted (streamd_output_dropped_total{output, reason}), so only that output falls behind,
and it still gets the freshest records when it recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from typing import Any

import structlog

from streamd.connectors import Sink

from .metrics import StreamdMetrics

log = structlog.get_logger(__name__)

MAX_RECORDS = 16  # a summary a minute: a quarter of an hour of records per stuck output
QUEUE_FULL = "queue_full"  # the oldest queued record made room for a new one
SHUTDOWN = "shutdown"  # still queued (or being written) when closing ran out of time

Record = Mapping[str, Any]


class OutputQueue:
    """One sink's queue and writer task; `put` never waits."""

    def __init__(self, sink: Sink, metrics: StreamdMetrics, max_records: int = MAX_RECORDS) -> None:
        self.sink = sink
        self.max_records = max_records
        self.written = 0
        self._metrics = metrics
        self._records: deque[tuple[Record, asyncio.Future[None]]] = deque()
        self._changed = asyncio.Event()
        self._writing = False
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    @property
    def queued(self) -> int:
        """Records not written yet, the one being written included."""
        return len(self._records) + self._writing

    def put(self, record: Record) -> asyncio.Future[None] | None:
        """Queue `record`. Returns a future done once it is written, failed or dropped, or
        None when the output is behind (records before it wait): nobody should wait then."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"output {self.sink.name}")
        behind = self.queued > 0
        if len(self._records) >= self.max_records:
            self._drop(self._records.popleft()[1], QUEUE_FULL)
        done = asyncio.get_running_loop().create_future()
        self._records.append((record, done))
        self._changed.set()
        return None if behind else done

    async def close(self, drain_s: float) -> None:
        """Let the queue drain for up to drain_s, then drop (counted) what is left."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), drain_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._records:
            self._drop(self._records.popleft()[1], SHUTDOWN)

    async def _drained(self) -> None:
        while self.queued:
            self._changed.clear()
            await self._changed.wait()

    async def _run(self) -> None:
        while True:
            while not self._records:
                self._changed.clear()
                await self._changed.wait()
            record, done = self._records.popleft()
            self._writing = True
            try:
                await self.sink.emit(record)
                self.written += 1
            except asyncio.CancelledError:
                self._drop(done, SHUTDOWN)  # cut off mid-write at close
                raise
            except Exception:
                self._metrics.output_errors.inc(output=self.sink.name)
                log.exception("summary output failed", output=self.sink.name, seq=record.get("seq"))
            finally:
                self._writing = False
                self._changed.set()
                if not done.done():
                    done.set_result(None)

    def _drop(self, done: asyncio.Future[None], reason: str) -> None:
        self._metrics.output_dropped.inc(output=self.sink.name, reason=reason)
        if not done.done():
            done.set_result(None)
        if not self._warned:  # a stuck reader drops a record a summary: say it once
            self._warned = True
            log.warning(
                "a summary output is behind; its oldest records are dropped (counted)",
                output=self.sink.name,
                reason=reason,
                max_records=self.max_records,
            )
