"""The soak's settings, checked once: an error names the option and what would work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .payloads import BLOB_BYTES

MIN_DURATION_S = 10.0  # room for the daemon to run between the faults


class SoakOptionError(ValueError):
    """A setting that cannot work; the message names the option."""


@dataclass(frozen=True)
class SoakOptions:
    duration_s: float = 90.0  # traffic time, faults included; settling and startup come on top
    senders: int = 3  # acked ZeroMQ senders (streamd send's protocol), as many MQTT publishers
    rate: float = 20.0  # messages a second, per sender
    malformed: float = 0.1  # share of messages spoiled (bad UTF-8, NULs, broken JSON)
    blobs: int = 3  # 10 MB blobs over MQTT, spread over the run
    blob_bytes: int = BLOB_BYTES
    broker_restarts: int = 3
    sigterms: int = 1  # daemon stops (SIGTERM) and starts mid-flood, on the same state dir
    sigkills: int = 1  # daemon SIGKILLs and starts mid-flood
    watchdog_s: float = 2.0  # the daemon's WatchdogSec: fail if a ping gap exceeds it
    status_p99_s: float = 1.0  # fail if `status` answers slower than this at the 99th percentile
    model: str = "default"
    device: str = "auto"
    max_capacity: int = 1024
    summary_every_tokens: int = 2048
    warmup_s: float = 10.0  # memory before this, after each daemon start, is not judged
    max_memory_growth: float = 1.2  # last-third peak over first-third peak, per daemon run
    drain_timeout_s: float = 120.0  # for the daemon to catch up before counters are read
    start_timeout_s: float = 300.0  # for the daemon to load the model and subscribe
    seed: int = 0
    workdir: Path | None = None  # kept; by default a temporary folder, removed if all is well
    daemon_args: tuple[str, ...] = ()  # more `streamd run` options

    def __post_init__(self) -> None:
        object.__setattr__(self, "daemon_args", tuple(self.daemon_args))
        _at_least("--duration", self.duration_s, MIN_DURATION_S)
        _at_least("--senders", self.senders, 1)
        _at_least("--blobs", self.blobs, 0)
        _at_least("--broker-restarts", self.broker_restarts, 0)
        _at_least("--sigterms", self.sigterms, 0)
        _at_least("--sigkills", self.sigkills, 0)
        _at_least("--max-memory-growth", self.max_memory_growth, 1.0)
        _at_least("--warmup", self.warmup_s, 0.0)
        _at_least("--summary-every-tokens", self.summary_every_tokens, 0)
        positive = (
            ("--rate", self.rate),
            ("--drain-timeout", self.drain_timeout_s),
            ("--watchdog-sec", self.watchdog_s),
            ("--status-p99", self.status_p99_s),
        )
        for flag, value in positive:
            if value <= 0:
                raise SoakOptionError(f"{flag} = {value:g}: must be above 0")
        if not 0 <= self.malformed < 1:
            raise SoakOptionError(f"--malformed = {self.malformed:g}: must be at least 0, below 1")
        if self.warmup_s >= self.duration_s / 2:
            raise SoakOptionError(
                f"--warmup = {self.warmup_s:g}: must be under half of --duration "
                f"({self.duration_s:g}), or no memory is left to judge"
            )

    def as_json(self) -> dict[str, Any]:
        settings = asdict(self)
        settings["workdir"] = None if self.workdir is None else str(self.workdir)
        settings["daemon_args"] = list(self.daemon_args)
        return settings


def _at_least(flag: str, value: float, low: float) -> None:
    if value < low:
        raise SoakOptionError(f"{flag} = {value:g}: must be at least {low:g}")


SIGTERM, SIGKILL = "sigterm", "sigkill"


def schedule(options: SoakOptions) -> list[tuple[float, str]]:
    """(seconds after the traffic starts, "broker", "sigterm" or "sigkill"), evenly spaced:
    the daemon's stops alternate (SIGTERM first) and go between broker restarts."""
    stops = [SIGTERM, SIGKILL] * max(options.sigterms, options.sigkills)
    stops = [e for i, e in enumerate(stops) if i // 2 < (options.sigterms, options.sigkills)[i % 2]]
    brokers = ["broker"] * options.broker_restarts
    events: list[str] = []
    while stops or brokers:  # broker, stop, broker, stop, ... then what remains
        for pool in (brokers, stops):
            if pool:
                events.append(pool.pop(0))
    step = options.duration_s / (len(events) + 1)
    return [(step * (i + 1), event) for i, event in enumerate(events)]
