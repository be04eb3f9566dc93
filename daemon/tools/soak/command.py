"""`streamd soak`'s body: run, print the table, write the JSON, choose the exit code.

Exit codes: 0 reconciled with flat memory, 1 a check failed (the table says
which), 2 the soak could not run (no mosquitto, the daemon would not start, a
sender got stuck), with the reason on stderr, 130 interrupted (Ctrl-C; the
broker and the daemon are stopped on the way out).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..testing import BrokerError, DaemonExited, WaitTimeout
from .options import SoakOptions
from .report import render_table
from .runner import run_soak
from .senders import SenderStuck

EXIT_OK, EXIT_FAILED, EXIT_COULD_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
# What stops a soak before it has a table: each names what went wrong.
COULD_NOT_RUN = (BrokerError, DaemonExited, WaitTimeout, SenderStuck)


def run_command(
    options: SoakOptions,
    json_path: Path | None,
    echo: Callable[[str], None],
    progress: Callable[[str], None],
) -> int:
    try:
        result, workdir = run_soak(options, lambda line: progress(f"soak: {line}"))
    except COULD_NOT_RUN as error:
        progress(f"streamd soak: {error}")
        progress("streamd soak: the daemon's and the broker's logs are in the folder named above")
        return EXIT_COULD_NOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    echo(render_table(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
    if not result.ok:
        progress(f"streamd soak: logs, JSONL and broker files kept in {workdir}")
        return EXIT_FAILED
    return EXIT_OK
