"""Which spooled messages the session has taken in: the spool positions a snapshot may
record and the spool may be trimmed up to.

A message is outstanding from its spool append until the engine has it (or it is dropped
by a policy and counted). Two watermarks, each "every message up to here is":

- handed: given to the engine thread (or dropped). The engine thread runs its calls in
  order, so a snapshot captured after this point holds these messages: read it just
  before the capture is submitted, and the snapshot records what it includes.
- done: ingested by the engine (or dropped): what the spool may drop without a snapshot.

A message taken by the engine in parts is handed with its last part.
"""

from __future__ import annotations

import heapq


class _Watermark:
    """The highest n such that every added position <= n is settled."""

    def __init__(self) -> None:
        self._open: set[int] = set()
        self._heap: list[int] = []
        self._highest = 0  # the highest position ever added

    def add(self, position: int) -> None:
        self._open.add(position)
        heapq.heappush(self._heap, position)
        self._highest = max(self._highest, position)

    def settle(self, position: int) -> None:
        self._open.discard(position)

    def mark(self) -> int:
        while self._heap and self._heap[0] not in self._open:
            heapq.heappop(self._heap)  # settled: lazily forgotten
        return self._heap[0] - 1 if self._heap else self._highest

    def start_after(self, position: int) -> None:
        """Positions up to `position` are settled already (a restart's spool)."""
        self._highest = max(self._highest, position)


class Ledger:
    def __init__(self) -> None:
        self._handed = _Watermark()
        self._done = _Watermark()

    def start_after(self, position: int) -> None:
        self._handed.start_after(position)
        self._done.start_after(position)

    def spooled(self, position: int) -> None:
        self._handed.add(position)
        self._done.add(position)

    def handed(self, positions: list[int]) -> None:
        for position in positions:
            self._handed.settle(position)

    def done(self, positions: list[int]) -> None:
        for position in positions:
            self._handed.settle(position)
            self._done.settle(position)

    @property
    def handed_mark(self) -> int:
        return self._handed.mark()

    @property
    def done_mark(self) -> int:
        return self._done.mark()
