"""The one thread the session lives on (EngineThread), and what it is doing now.

The event loop submits calls and awaits them; it never runs a forward pass itself. Each
call names its activity (ingesting, summarizing, ...), so `status` and the metrics can say
what the engine is busy with and for how long, and the scheduler can weigh the time
summaries take against the time ingest gets (fairness.py), without ever waiting on the
engine: `doing` and the busy totals are plain values written by the engine thread and
read by the loop.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

IDLE = "idle"
LOADING = "loading"  # the model, at start
RESUMING = "resuming"  # a snapshot's window re-prefilled
INGESTING = "ingesting"
SUMMARIZING = "summarizing"
TUNING = "tuning"  # a live resize of the cache
SNAPSHOT = "snapshot"  # the window's ids captured
OTHER = "other"  # anything else that must run where the session lives
ACTIVITIES = (IDLE, LOADING, RESUMING, INGESTING, SUMMARIZING, TUNING, SNAPSHOT, OTHER)


class EngineError(RuntimeError):
    """A summary or resize failed inside the session; the message says what happened."""


@dataclass(frozen=True)
class Doing:
    """The engine's current activity and since when (time.monotonic())."""

    activity: str
    since: float

    def for_s(self) -> float:
        return max(0.0, time.monotonic() - self.since)


_Call = tuple[Callable[..., Any], tuple[Any, ...], Future[Any], str]  # fn, args, result, activity


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
        # Written by the engine thread only; one attribute store each, so the loop reads
        # a consistent value without a lock. Every key exists from the start: the loop
        # copies the dict while the engine thread updates its values.
        self.doing = Doing(IDLE, time.monotonic())
        self._busy_s = dict.fromkeys(ACTIVITIES, 0.0)

    def start(self) -> None:
        self._thread.start()

    async def call(self, fn: Callable[..., T], *args: Any, activity: str) -> T:
        """Run fn(*args) on the engine thread; its exception is raised here."""
        if activity not in self._busy_s:
            raise ValueError(f"unknown engine activity {activity!r}; one of {ACTIVITIES}")
        if self._stopping:
            raise RuntimeError("the engine thread is stopping")
        future: Future[T] = Future()
        self._calls.put((fn, args, future, activity))
        return await asyncio.wrap_future(future)

    def busy_s(self) -> dict[str, float]:
        """Seconds the engine spent in each activity, over the calls that finished."""
        busy = dict(self._busy_s)
        busy.pop(IDLE)
        return busy

    def busy(self, activity: str) -> float:
        return self._busy_s[activity]

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
            fn, args, future, activity = call
            if not future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            began = time.monotonic()
            self.doing = Doing(activity, began)
            try:
                result = fn(*args)
            except BaseException as error:
                self._done(activity, began)
                future.set_exception(error)
            else:
                # Counted before the result is set: the caller reads the totals after it.
                self._done(activity, began)
                future.set_result(result)

    def _done(self, activity: str, began: float) -> None:
        now = time.monotonic()
        self._busy_s[activity] += now - began
        self.doing = Doing(IDLE, now)
