"""Sharing the event loop: a source that always has a message ready never waits.

pyzmq answers `await socket.recv()` with a future that is already done when a message is
queued, and awaiting a done future does not go back to the loop. So in a flood a receive
loop that never has to wait keeps the loop to itself: `status`, the metrics, the watchdog
and the engine's batches all starve (#11: `status` took 27 s, the watchdog went 58 s
without a ping). A source calls `LoopShare.turn()` after each message; once it has run for
a slice, that gives the loop one round to everything else that is ready.
"""

from __future__ import annotations

import asyncio
import time

# Long enough that a flood still moves tens of thousands of messages a second, short
# enough that a control request (a few loop rounds) is answered in well under a second.
SLICE_S = 0.005


class LoopShare:
    """One per receive loop: `await share.turn()` after each message."""

    def __init__(self, slice_s: float = SLICE_S) -> None:
        self._slice_s = slice_s
        self._since = time.monotonic()

    async def turn(self) -> None:
        now = time.monotonic()
        if now - self._since >= self._slice_s:
            await asyncio.sleep(0)  # one round of the loop for every other ready task
            self._since = time.monotonic()
