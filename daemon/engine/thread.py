"""The engine thread: one thread that runs submitted calls in order, and nothing else.

The session (model, tokenizer, cache) is not thread-safe, and torch work must
never run on the event loop. So every call that touches the session is
submitted here; the loop awaits the result:

    stats = await thread.call(worker.ingest, text)

Calls run one at a time in submission order, so an ingest, a summary and a
`tune` can never interleave, and the loop never waits on a forward pass.
(gpu.NvmlReader uses one too, for NVML calls that may block.)
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: Future[Any]


class EngineThread:
    """A single worker thread with a FIFO of calls; `call()` awaits one from the loop."""

    def __init__(self, name: str = "streamd-engine") -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # daemon=True: a forced exit (second SIGTERM) must not wait for a forward pass
        # that may take seconds, or hang forever in a wedged GPU driver call.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopping = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._stopping:
            raise RuntimeError("the engine thread is stopping")
        future: Future[T] = Future()
        self._calls.put(_Call(fn, args, future))
        return future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(*args) on the engine thread; its exception is raised here."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def stop(self, timeout_s: float) -> bool:
        """Let the calls already submitted finish, then end; False if still busy after
        timeout_s (the thread is a daemon thread: the process may exit anyway)."""
        if not self._stopping:
            self._stopping = True
            self._calls.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            if not call.future.set_running_or_notify_cancel():
                continue  # the caller gave up before it started
            try:
                result = call.fn(*call.args)
            except BaseException as error:
                call.future.set_exception(error)
            else:
                call.future.set_result(result)
