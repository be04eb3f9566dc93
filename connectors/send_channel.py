"""Where `streamd send` hands its lines: a Channel settles each line's Outcome, in
line order, and Patience decides how long a line waits for the receiver."""

from __future__ import annotations

from typing import Protocol

# The outcome of one line: None once sent, else why not (one line of words).
Outcome = str | None


class Channel(Protocol):
    """Where lines go. Each method returns the outcomes settled by then, in line order."""

    def submit(self, payload: bytes) -> list[Outcome]:
        """Hands a line to the receiver (waiting for it as `Patience` allows)."""

    def refuse(self, reason: str) -> list[Outcome]:
        """A line not sent, for `reason`: its outcome comes in its place in line order."""

    def settle_all(self) -> list[Outcome]:
        """Waits for the outcomes of all the lines still awaiting one."""


class Patience:
    """How long a line may wait for the receiver to be there: `timeout_s`, or
    nothing once one has timed out, until one goes through again.

    So a file sent to no daemon ends after about one timeout, not one per line,
    and `journalctl -f | streamd send` resumes by itself when the daemon is back.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.wait_s = timeout_s

    def saw(self, there: bool) -> None:
        """Note whether the receiver took (or answered) a line in time."""
        self.wait_s = self.timeout_s if there else 0.0
