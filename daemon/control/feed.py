"""SummaryFeed: the last summaries, numbered, behind the `summaries` command (a long poll)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from typing import Any

from .protocol import ControlError, check_args

MAX_WAIT_S = 60.0  # longest long poll a client may ask for
RECENT_DEFAULT = 10  # summaries `summaries` returns without "after" or "limit"


class SummaryFeed:
    """The last `keep` summaries, numbered from 1.

    A long poll on the control socket rather than a PUB socket: no second socket to
    secure, and no summary is lost between polls the way a late subscriber loses the
    first messages. Without "after", `summaries` returns the last `limit` at once; with
    "after": N it waits up to wait_s seconds for summaries numbered above N. "epoch"
    names one run of the daemon: its numbering starts again after a restart, so a
    client with a stale epoch gets everything the new run has kept.

    publish() runs on the event loop (from the engine thread:
    loop.call_soon_threadsafe(feed.publish, summary)); handle() is the command.
    """

    def __init__(self, keep: int = 256) -> None:
        self.keep = keep
        self.epoch = secrets.token_hex(8)  # changes each run, so clients notice a restart
        self._entries: deque[tuple[int, dict[str, Any]]] = deque(maxlen=keep)
        self._last = 0
        self._changed = asyncio.Event()

    def publish(self, summary: dict[str, Any]) -> int:
        """Keep a summary and wake the long polls; returns its number."""
        self._last += 1
        self._entries.append((self._last, summary))
        self._changed.set()
        self._changed = asyncio.Event()
        return self._last

    async def handle(self, args: dict[str, Any]) -> dict[str, Any]:
        """The `summaries` command: {"after"?, "epoch"?, "wait_s"?, "limit"?}."""
        check_args("summaries", args, ("after", "epoch", "wait_s", "limit"))
        after = _int_arg(args, "after", 0, None)
        limit = _int_arg(args, "limit", 0, self.keep)
        wait_s = _float_arg(args, "wait_s", 0.0, MAX_WAIT_S)
        if after is None:
            return self._recent(RECENT_DEFAULT if limit is None else limit)
        if args.get("epoch") != self.epoch:
            after = 0  # another run's numbering: everything this run kept is new
        after = min(after, self._last)
        if wait_s and self._last == after:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), wait_s)
        return self._newer(after, self.keep if limit is None else limit)

    def _recent(self, limit: int) -> dict[str, Any]:
        entries = list(self._entries)[len(self._entries) - limit :] if limit else []
        return self._page(entries, self._last, missed=0)

    def _newer(self, after: int, limit: int) -> dict[str, Any]:
        newer = [(n, s) for n, s in self._entries if n > after][:limit]
        first_kept = self._entries[0][0] if self._entries else self._last + 1
        cursor = newer[-1][0] if newer else after
        return self._page(newer, cursor, missed=max(0, first_kept - after - 1))

    def _page(
        self, entries: list[tuple[int, dict[str, Any]]], cursor: int, missed: int
    ) -> dict[str, Any]:
        summaries = [s for _, s in entries]
        return {"epoch": self.epoch, "cursor": cursor, "missed": missed, "summaries": summaries}


def _int_arg(args: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < low or (high is not None and value > high):
        allowed = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ControlError(f"summaries: {name} must be an integer {allowed}, not {value!r}")
    return int(value)


def _float_arg(args: dict[str, Any], name: str, low: float, high: float) -> float:
    value = args.get(name, low)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ControlError(f"summaries: {name} must be a number from {low:g} to {high:g}")
    return float(value)
