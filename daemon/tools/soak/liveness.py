"""Whether the daemon stays responsive through the soak: the systemd watchdog's pings
(the soak plays systemd: a NOTIFY_SOCKET and WATCHDOG_USEC) and how fast `status` answers.

Both are judged only while a daemon run is live: from its "ready" to the signal that ends
it. The event loop sends the pings and answers `status`, so a loop held by a flood, a
stalled output or a slow disk shows here as a long gap or a slow answer.
"""

from __future__ import annotations

import itertools
import math
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..testing import STATUS_TIMEOUT_S

PROBE_EVERY_S = 0.5


class NotifyListener(threading.Thread):
    """A unix datagram socket in systemd's place: the arrival time of each WATCHDOG=1."""

    def __init__(self, path: Path) -> None:
        super().__init__(name="soak-notify", daemon=True)
        self.path = path
        self.pings: list[float] = []  # time.monotonic() of each ping, in order
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                message = self._sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            if "WATCHDOG=1" in message.split("\n"):
                self.pings.append(time.monotonic())

    def stop(self) -> None:
        self._stopping.set()
        self.join()
        self._sock.close()
        self.path.unlink(missing_ok=True)


class StatusProbe(threading.Thread):
    """Asks `status` every PROBE_EVERY_S while a run is live; keeps each answer's latency
    in seconds, or None for no answer (the client's timeout, or nothing listening), and
    for each unanswered one when and why."""

    def __init__(self, status: Callable[[], tuple[dict[str, Any] | None, str]]) -> None:
        super().__init__(name="soak-status-probe", daemon=True)
        self.status = status
        self.latencies: list[float | None] = []
        self.unanswered: list[str] = []  # "after 0.0 s, run 2: why"
        self._window = 0  # which live window (run) this is; 0: none yet; under _lock
        self._live = False
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    def live(self, on: bool) -> None:
        """Probe from now (the run is ready) or no more (a signal is about to end it).
        An answer counts only in the window it was asked in: once live(False) returns, none
        of the ending run is counted, even one that comes back after the next run's start
        (a request to a stopping daemon can wait out the probe's timeout)."""
        with self._lock:
            self._window += on
            self._live = on

    def _asking(self) -> int | None:
        with self._lock:
            return self._window if self._live else None

    def run(self) -> None:
        while not self._stopping.wait(PROBE_EVERY_S):
            window = self._asking()
            if window is None:
                continue
            asked = time.monotonic()
            doc, why = self.status()
            latency = time.monotonic() - asked
            with self._lock:
                if self._live and self._window == window:
                    self.latencies.append(None if doc is None else latency)
                    if doc is None:
                        self.unanswered.append(f"after {latency:.1f} s, run {window}: {why}")

    def stop(self) -> None:
        self._stopping.set()
        self.join()


def probe_judged_by(
    status_or_error: Callable[[float], tuple[dict[str, Any] | None, str]], p99_bound_s: float
) -> StatusProbe:
    """A probe whose requests wait as long as the bound they are judged by (twice it, the
    client's usual 5 s at least): an answer slower than 5 s but within a loose
    --status-p99 is a slow answer for the p99 to judge, not a lost one."""
    timeout_s = max(STATUS_TIMEOUT_S, 2 * p99_bound_s)
    return StatusProbe(lambda: status_or_error(timeout_s))


@dataclass
class LiveWindow:
    """One daemon run, from ready to the signal that ended it (monotonic seconds)."""

    start: float
    end: float | None = None


@dataclass(frozen=True)
class Liveness:
    max_ping_gap_s: float | None  # None: no run had two pings
    gaps_by_run: tuple[float | None, ...]
    status_asked: int
    status_unanswered: int
    status_p50_s: float | None
    status_p99_s: float | None
    status_max_s: float | None
    unanswered_why: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        return {
            "watchdog_max_gap_ms": ms(self.max_ping_gap_s),
            "watchdog_max_gap_ms_by_run": [ms(g) for g in self.gaps_by_run],
            "status_asked": self.status_asked,
            "status_unanswered": self.status_unanswered,
            "status_p50_ms": ms(self.status_p50_s),
            "status_p99_ms": ms(self.status_p99_s),
            "status_max_ms": ms(self.status_max_s),
            "status_unanswered_why": list(self.unanswered_why),
        }


def max_gap(pings: Sequence[float], start: float, end: float) -> float | None:
    """The longest wait between consecutive pings in [start, end], counting the wait from
    `start` to the first; None without a ping there."""
    inside = [at for at in pings if start <= at <= end]
    if not inside:
        return None
    edges = [start, *inside]
    return max(b - a for a, b in itertools.pairwise(edges))


def quantile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank quantile (a sample that was measured, not an interpolation)."""
    if not values:
        return None
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def liveness(
    pings: Sequence[float],
    windows: Sequence[LiveWindow],
    latencies: Sequence[float | None],
    unanswered_why: Sequence[str] = (),
) -> Liveness:
    closed = [(w.start, w.end) for w in windows if w.end is not None]
    gaps = tuple(max_gap(pings, start, end) for start, end in closed)
    measured = [g for g in gaps if g is not None]
    answered = [latency for latency in latencies if latency is not None]
    return Liveness(
        max_ping_gap_s=max(measured) if measured else None,
        gaps_by_run=gaps,
        status_asked=len(latencies),
        status_unanswered=len(latencies) - len(answered),
        status_p50_s=quantile(answered, 0.5),
        status_p99_s=quantile(answered, 0.99),
        status_max_s=max(answered) if answered else None,
        unanswered_why=tuple(unanswered_why),
    )
