"""Messages whose sender is told once the daemon holds them: the intake fills a Receipt
(the daemon spooled the message, and how to wait until that is on disk), the source then
acknowledges to its sender (an acked `streamd send`, an MQTT PUBACK)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .messages import RawMessage


@dataclass
class Receipt:
    """What the intake says back about one message: for an acked sender, its highest seq
    the daemon now holds; and how to wait until the message is on disk (None: nothing to
    wait for: it is, or it was never spooled and goes on in memory)."""

    acked: int = 0
    durable: Callable[[], Awaitable[None]] | None = None


@dataclass(frozen=True)
class DurableMessage(RawMessage):
    """A RawMessage acknowledged to its sender only once the daemon holds it."""

    receipt: Receipt = field(default_factory=Receipt, compare=False)
