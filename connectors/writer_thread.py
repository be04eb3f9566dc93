"""Blocking writes on a daemon thread of their own, for a stream that may never drain.

A pipe whose reader stopped reading blocks write(2) for ever. asyncio.to_thread would park
that write on the default executor, which asyncio.run joins at exit (for up to five
minutes), and a write through sys.stdout would hold its buffer's lock, which interpreter
shutdown then cannot take (a fatal error). So StdoutSink writes raw bytes to the file
descriptor from this thread: a write that never returns costs that thread only, and the
process still exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable

_Job = tuple[bytes, asyncio.AbstractEventLoop, asyncio.Future[None]]


class WriterThread:
    """`await writer.write(data)` returns once `data` is written (or raises its error)."""

    def __init__(self, write: Callable[[bytes], None], name: str) -> None:
        self._write = write
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((data, loop, done))
        await done

    def close(self) -> None:
        """No more writes; a write in progress is left to finish, or not, on its own."""
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            data, loop, done = job
            try:
                self._write(data)
                outcome: BaseException | None = None
            except Exception as error:
                outcome = error
            # The loop may be gone by now (the write outlived the daemon's shutdown).
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, outcome)


def _settle(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.done():  # its awaiter was cancelled
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)
