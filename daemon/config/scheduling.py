"""How the engine's time is shared and how long a shutdown may take: the `engine` and
`shutdown` sections (the scheduler and the service read them; fairness.py explains the
share)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .rules import Rule, Section

# systemd's TimeoutStopSec in the shipped units: the shutdown budget must end before it.
UNIT_STOP_TIMEOUT_S = 60


@dataclass(frozen=True)
class EngineConfig(Section):
    section: ClassVar[str] = "engine"

    # While text waits in the queue, triggered summaries (tokens, seconds) take at most
    # this share of the engine's time; the rest is ingest's. An asked-for summary
    # (`streamd summarize`, the shutdown) is never held back.
    summary_share: float = field(
        default=0.25, metadata=Rule(at_least=0.01, at_most=1, hint="1 turns the limit off").meta
    )
    # `status` and streamd_keeping_up say the daemon falls behind once the oldest unread
    # message has waited longer than this.
    max_lag_seconds: float = field(default=60.0, metadata=Rule(at_least=0.1).meta)


@dataclass(frozen=True)
class ShutdownConfig(Section):
    section: ClassVar[str] = "shutdown"

    # From SIGTERM to exit, everything included: a summary running is cut short at once,
    # queued text drained, the final summary, the snapshot. Under systemd's
    # TimeoutStopSec (60 s in the shipped units), with room to spare for the process exit.
    timeout_seconds: float = field(
        default=45.0,
        metadata=Rule(
            at_least=5, at_most=3600, hint=f"keep it under TimeoutStopSec ({UNIT_STOP_TIMEOUT_S})"
        ).meta,
    )
    # The final summary's own time limit (it also gets no more than what the budget has
    # left); 0 writes none (logged).
    final_summary_seconds: float = field(
        default=10.0, metadata=Rule(at_least=0, hint="0: no final summary").meta
    )

    def _check(self) -> None:
        if self.final_summary_seconds >= self.timeout_seconds:
            why = (
                f"must be below shutdown.timeout_seconds ({self.timeout_seconds:g}), which "
                "also covers the drain and the snapshot; lower it, or raise the timeout"
            )
            raise self.invalid("final_summary_seconds", why)
