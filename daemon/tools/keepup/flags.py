"""`streamd keepup`'s command-line options, one table: each flag's default is
KeepupOptions' and its bounds are checked there (an error names the flag)."""

from __future__ import annotations

from pathlib import Path

import click

from ...cli_options import (
    F,
    OptionRow,
    daemon_arg_option,
    max_capacity_option,
    model_option,
    option_table,
)
from .options import KeepupOptions

# (flag, KeepupOptions field, click type, help), in the order --help lists them.
_FEED: tuple[OptionRow, ...] = (
    ("--rate", "rate", float, "Lines per second, on a fixed schedule (one every 1/rate s)."),
    ("--duration", "duration_s", float, "Seconds of feeding (loading and draining come on top)."),
)
_DEVICE: tuple[OptionRow, ...] = (
    ("--device", "device", str, "The daemon's device: cpu, auto, cuda or cuda:N."),
)
_SUMMARIES: tuple[OptionRow, ...] = (
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
_JUDGING: tuple[OptionRow, ...] = (
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


def keepup_options(command: F) -> F:
    """Every option of `streamd keepup` but --report."""
    command = daemon_arg_option(command)
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
    defaults = KeepupOptions()
    command = option_table(_JUDGING, defaults, command)
    command = max_capacity_option(option_table(_SUMMARIES, defaults, command))
    command = model_option(option_table(_DEVICE, defaults, command))
    return option_table(_FEED, defaults, command)
