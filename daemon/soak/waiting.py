"""Polling with a deadline: the soak waits on processes it does not control."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
POLL_S = 0.2


class SoakTimeout(RuntimeError):
    """Something the soak waited for did not happen in time; the message says what."""


def poll_until(
    check: Callable[[], T | None], what: str, timeout_s: float, every_s: float = POLL_S
) -> T:
    """Call `check` until it returns something other than None (or False), and return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise SoakTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
