"""What the service's steps share: exit codes, the startup error, and awaiting a step
unless a signal (an asyncio.Event) comes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Sequence
from typing import Any

import structlog
import zmq

from .config import ConfigError

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1  # a forced exit, a task that died, a start that failed at run time
EXIT_CONFIG = 2  # a setting that cannot work (the message names it)


SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitSignals:
    """The first SIGTERM/SIGINT sets should_exit (the graceful shutdown), a second one
    force_exit too (abandon the step running, exit 1). Handlers only set flags; the ones
    installed before are put back by restore()."""

    def __init__(self) -> None:
        self.should_exit = asyncio.Event()
        self.force_exit = asyncio.Event()
        self._old_handlers: dict[int, Any] = {}

    def handle(self, signum: int) -> None:
        if self.should_exit.is_set():
            log.warning("second signal: exiting now", signal=signal.Signals(signum).name)
            self.force_exit.set()
        else:
            log.info("signal received: shutting down", signal=signal.Signals(signum).name)
        self.should_exit.set()

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only (an embedding application's loop)
        loop = asyncio.get_running_loop()
        for signum in SIGNALS:
            self._old_handlers[signum] = signal.getsignal(signum)
            loop.add_signal_handler(signum, self.handle, signum)

    def restore(self) -> None:
        loop = asyncio.get_running_loop()
        for signum, old in self._old_handlers.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, old)
        self._old_handlers.clear()


class StartupError(Exception):
    """The service cannot start; the message says why and what to change."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def as_startup_error(error: Exception) -> StartupError:
    """Any failure at startup as one line: ours say what to change; anything else says
    what it was (the log has the traceback)."""
    if isinstance(error, StartupError):
        return error
    if isinstance(error, ConfigError):
        return StartupError(str(error), EXIT_CONFIG)
    # One line for people; the traceback for whoever debugs it (at debug level).
    log.debug("startup failed with an unexpected error", exc_info=error)
    return StartupError(f"cannot start: {type(error).__name__}: {error}")


def exit_now(code: int) -> None:
    """Exit without interpreter teardown, once what is written is flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def opened(opening: Awaitable[None], key: str) -> None:
    """Open a source or output; a busy address or unwritable file names its config key."""
    try:
        await opening
    except (OSError, zmq.ZMQError) as error:
        raise StartupError(f"{key}: cannot open: {error}") from None


async def race(work: Awaitable[None], event: asyncio.Event) -> bool:
    """Await `work` unless `event` is set first (then `work` is cancelled); True if it ran
    to the end. Its exception, if it raised, is raised here."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.create_task(event.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    await cancel([waiter])
    if not task.done():
        await cancel([task])
        return False
    task.result()
    return True


async def cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
