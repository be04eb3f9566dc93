"""The soak's command-line options, one table: each flag's default is SoakOptions' and its
bounds are checked there (an error names the flag), so neither is written twice."""

from __future__ import annotations

from pathlib import Path

import click

from ...cli_options import F, OptionRow, daemon_arg_option, option_table, session_options
from .options import SoakOptions

# (flag, SoakOptions field, click type, help), in the order --help lists them.
_TRAFFIC: tuple[OptionRow, ...] = (
    (
        "--duration",
        "duration_s",
        float,
        "Seconds of traffic, faults included (model loading and settling come on top).",
    ),
    (
        "--senders",
        "senders",
        int,
        "ZeroMQ senders with acknowledged delivery (`streamd send`'s), and as many MQTT QoS 1 "
        "publishers.",
    ),
    (
        "--rate",
        "rate",
        float,
        "Messages/s per sender (about 70 tokens each). Keep the total below what the daemon "
        "ingests (printed every 30 s), or settling waits for its backlog.",
    ),
    (
        "--malformed",
        "malformed",
        float,
        "Share of messages spoiled: invalid UTF-8, NUL bytes, or a JSON envelope cut short.",
    ),
    ("--blobs", "blobs", int, "10 MB blobs over MQTT (refused as too large)."),
    ("--broker-restarts", "broker_restarts", int, "SIGTERM + start."),
    ("--sigterms", "sigterms", int, "Daemon SIGTERM + start on the same state dir, mid-flood."),
    ("--sigkills", "sigkills", int, "Daemon SIGKILL + start on the same state dir, mid-flood."),
)
_JUDGING: tuple[OptionRow, ...] = (
    (
        "--summary-every-tokens",
        "summary_every_tokens",
        int,
        "The daemon's token trigger (its seconds trigger is off: see the description).",
    ),
    ("--warmup", "warmup_s", float, "Seconds after each daemon start whose memory is not judged."),
    (
        "--max-memory-growth",
        "max_memory_growth",
        float,
        "Fail if a daemon run's peak RSS in its last third exceeds this times its first third's.",
    ),
    (
        "--drain-timeout",
        "drain_timeout_s",
        float,
        "Seconds the daemon gets to take in what was sent before counters are read.",
    ),
    (
        "--watchdog-sec",
        "watchdog_s",
        float,
        "The daemon's WatchdogSec (it pings every half of it): fail if a gap between pings "
        "exceeds it.",
    ),
    (
        "--status-p99",
        "status_p99_s",
        float,
        "Fail if `status`, asked every 0.5 s while a daemon runs, answers slower at the 99th "
        "percentile, or not at all (each request waits twice this, 5 s at least).",
    ),
    ("--seed", "seed", int, "Seed of the message mix."),
)


def soak_options(command: F) -> F:
    """Every option of `streamd soak` but --json."""
    command = daemon_arg_option(command)
    command = click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        help="Keep the daemon's and the broker's logs and files here [default: a temporary "
        "folder, removed if the soak passes].",
    )(command)
    defaults = SoakOptions()
    command = session_options(option_table(_JUDGING, defaults, command))
    return option_table(_TRAFFIC, defaults, command)
