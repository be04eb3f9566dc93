"""`streamd keepup`'s settings, checked once: an error names the option and what would work."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class KeepupOptionError(ValueError):
    """A setting that cannot work; the message names the option."""


@dataclass(frozen=True)
class KeepupOptions:
    rate: float = 5.0  # lines a second, offered on a fixed schedule
    duration_s: float = 600.0  # of feeding; loading and draining come on top
    model: str = "default"
    device: str = "cpu"
    max_capacity: int = 1024
    summary_every_seconds: float = 60.0
    summary_every_tokens: int = 0  # off: summaries come from the seconds trigger alone
    max_lag_s: float = 30.0  # the oldest unread message may never be older than this
    lag_slack_s: float = 10.0  # last third's worst lag over the first third's, at most
    interval_tolerance_s: float = 5.0  # on the pause between two periodic summaries
    sample_every_s: float = 2.0  # status read this often
    start_timeout_s: float = 600.0  # the first start of the default model converts it
    drain_timeout_s: float = 120.0  # after the feed, for the daemon to take in the rest
    log_files: tuple[Path, ...] = ()  # lines to feed; empty: the bundled real logs
    workdir: Path | None = None  # kept; by default a temporary folder, removed if it keeps up
    daemon_args: tuple[str, ...] = ()  # more `streamd run` options

    def __post_init__(self) -> None:
        object.__setattr__(self, "daemon_args", tuple(self.daemon_args))
        object.__setattr__(self, "log_files", tuple(Path(p) for p in self.log_files))
        positive = (
            ("--rate", self.rate),
            ("--duration", self.duration_s),
            ("--summary-every-seconds", self.summary_every_seconds),
            ("--max-lag", self.max_lag_s),
            ("--sample-every", self.sample_every_s),
            ("--start-timeout", self.start_timeout_s),
            ("--drain-timeout", self.drain_timeout_s),
        )
        for flag, value in positive:
            if value <= 0:
                raise KeepupOptionError(f"{flag} = {value:g}: must be above 0")
        for flag, value in (
            ("--lag-slack", self.lag_slack_s),
            ("--interval-tolerance", self.interval_tolerance_s),
            ("--summary-every-tokens", self.summary_every_tokens),
        ):
            if value < 0:
                raise KeepupOptionError(f"{flag} = {value:g}: must be at least 0")
        if self.rate * self.duration_s < 1:
            raise KeepupOptionError(
                f"--rate {self.rate:g} for --duration {self.duration_s:g} s sends no line"
            )
        if self.sample_every_s * 3 > self.duration_s:
            raise KeepupOptionError(
                f"--sample-every = {self.sample_every_s:g}: at most a third of --duration "
                f"({self.duration_s:g}), or no trend can be judged"
            )
        for path in self.log_files:
            if not path.is_file():
                raise KeepupOptionError(f"--log {path}: no such file")
        if self.workdir is not None and self.workdir.is_dir() and any(self.workdir.iterdir()):
            raise KeepupOptionError(
                f"--workdir {self.workdir}: not empty; give a new or empty folder (a daemon's "
                "snapshot, spool and JSONL there would carry over into this run)"
            )

    @property
    def lines(self) -> int:
        """Lines the feed sends: one every 1/rate seconds for duration_s."""
        return int(self.rate * self.duration_s)

    def as_json(self) -> dict[str, Any]:
        settings = asdict(self)
        settings["workdir"] = None if self.workdir is None else str(self.workdir)
        settings["log_files"] = [str(path) for path in self.log_files]
        settings["daemon_args"] = list(self.daemon_args)
        return settings
