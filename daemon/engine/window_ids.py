"""The token ids of the stream window, on the CPU, in a ring of fixed size.

A snapshot needs the window's tokens, and the KV cache holds only keys and values. This keeps
them the way the cache keeps its slots: position t at index t mod capacity, written with at
most two slice copies into a preallocated array, so nothing grows.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence

TYPECODE = "q"  # int64, like the model's input ids


# capacity must be at least the window W: between two chunks a query sees at most the last W
# positions, all of which are still here. A live resize that grows the window past capacity
# reallocates once (`resize`), as the cache does.
class TokenWindow:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity = {capacity}: must be >= 1")
        self.capacity = capacity
        self._ids = array(TYPECODE, bytes(8 * capacity))

    def write(self, first: int, ids: Sequence[int]) -> None:
        """Record ids at positions first, first + 1, ...; only the last `capacity` matter."""
        skip = max(0, len(ids) - self.capacity)
        self._copy_in(first + skip, array(TYPECODE, ids[skip:]))

    def read(self, first: int, end: int) -> list[int]:
        """The ids of positions first..end-1, oldest first (at most the last `capacity`)."""
        if not 0 <= end - first <= self.capacity:
            raise ValueError(
                f"positions {first}..{end - 1}: must be 0..{self.capacity} positions long"
            )
        start = first % self.capacity
        stop = start + (end - first)
        if stop <= self.capacity:
            return self._ids[start:stop].tolist()
        return (self._ids[start:] + self._ids[: stop - self.capacity]).tolist()

    def resize(self, capacity: int, first: int, end: int) -> None:
        """Reallocate for a new capacity, keeping positions first..end-1 (a live resize)."""
        kept = self.read(first, end)
        replacement = TokenWindow(capacity)
        replacement.write(first, kept)
        self.capacity, self._ids = capacity, replacement._ids

    # Example, capacity 8: positions 100..103 go to indices 4..7, then 104..106 to 0..2 (the
    # write wraps), overwriting 96..98. The window of the last 8 positions, 99..106, reads
    # back as indices 3..7 and then 0..2.
    def _copy_in(self, first: int, ids: array[int]) -> None:
        start = first % self.capacity
        head = min(len(ids), self.capacity - start)
        self._ids[start : start + head] = ids[:head]
        self._ids[: len(ids) - head] = ids[head:]  # the part that wraps to the front
