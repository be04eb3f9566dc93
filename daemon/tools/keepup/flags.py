"""`streamd keepup`'s command-line options, one table: each flag's default is
KeepupOptions' and its bounds are checked there (an error names the flag)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ...cli_options import max_capacity_option, model_option
from .options import KeepupOptions

F = TypeVar("F", bound=Callable[..., Any])

# (flag, KeepupOptions field, click type, help), in the order --help lists them.
_FEED: tuple[tuple[str, str, Any, str], ...] = (
    ("--rate", "rate", float, "Lines per second, on a fixed schedule (one every 1/rate s)."),
    ("--duration", "duration_s", float, "Seconds of feeding (loading and draining come on top)."),
)
_DEVICE: tuple[tuple[str, str, Any, str], ...] = (
    ("--device", "device", str, "The daemon's device: cpu, auto, cuda or cuda:N."),
)
_SUMMARIES: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--summary-every-seconds",
        "summary_every_seconds",
        float,
        "The daemon's seconds trigger: the period the summaries are judged against.",
    ),
    (
        "--summary-every-tokens",
        "summary_every_tokens",
        int,
        "The daemon's token trigger (0: off, so every summary comes from the seconds trigger; "
        "the daemon's own default is 2048).",
    ),
)
_JUDGING: tuple[tuple[str, str, Any, str], ...] = (
    (
        "--max-lag",
        "max_lag_s",
        float,
        "Fail if the oldest unread message (status' lag.oldest_unread_s) is ever older.",
    ),
    (
        "--lag-slack",
        "lag_slack_s",
        float,
        "Fail if the worst lag of the feed's last third exceeds the first third's by more.",
    ),
    (
        "--interval-tolerance",
        "interval_tolerance_s",
        float,
        "Seconds a periodic summary may start early or late against --summary-every-seconds "
        "after the previous one ended.",
    ),
    ("--sample-every", "sample_every_s", float, "Seconds between two status readings."),
    (
        "--start-timeout",
        "start_timeout_s",
        float,
        "Seconds the daemon gets to load its model (a first start converts the default one).",
    ),
    (
        "--drain-timeout",
        "drain_timeout_s",
        float,
        "Seconds after the feed for `streamd send` to be acknowledged and the daemon to ingest "
        "the rest.",
    ),
)


def _table(rows: tuple[tuple[str, str, Any, str], ...], command: F) -> F:
    defaults = KeepupOptions()
    for flag, field, kind, text in reversed(rows):
        default = getattr(defaults, field)
        command = click.option(flag, field, type=kind, default=default, help=text)(command)
    return command


def keepup_options(command: F) -> F:
    """Every option of `streamd keepup` but --report."""
    command = click.option(
        "--daemon-arg",
        "daemon_args",
        multiple=True,
        metavar="ARG",
        help="One more `streamd run` argument (repeatable): --daemon-arg=--chunk=64.",
    )(command)
    command = click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Keep the daemon's log, state, JSONL and `streamd send`'s log in this new or empty "
        "folder [default: a temporary folder, removed if it keeps up].",
    )(command)
    command = click.option(
        "--log",
        "log_files",
        multiple=True,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Feed the lines of this file, cycled (repeatable) [default: the real logs bundled "
        "in daemon/data].",
    )(command)
    command = max_capacity_option(_table(_SUMMARIES, _table(_JUDGING, command)))
    return _table(_FEED, model_option(_table(_DEVICE, command)))
