"""`streamd keepup`'s body: run, print the verdict, write the JSON report, choose the exit code.

Exit codes: 0 it keeps up (every check passed), 1 a check failed (the verdict says
which; the folder with the daemon's log and JSONL is kept), 2 the measurement could not
run (the daemon would not start or died, the feed broke), with the reason on stderr,
130 interrupted (Ctrl-C; the daemon and `streamd send` are stopped on the way out).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..testing import DaemonExited, WaitTimeout
from .options import KeepupOptions
from .runner import FeedFailed, run_keepup

EXIT_OK, EXIT_FAILED, EXIT_COULD_NOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
COULD_NOT_RUN = (DaemonExited, WaitTimeout, FeedFailed)


def run_command(
    options: KeepupOptions,
    report_path: Path | None,
    echo: Callable[[str], None],
    progress: Callable[[str], None],
) -> int:
    try:
        result, workdir = run_keepup(options, lambda line: progress(f"keepup: {line}"))
    except COULD_NOT_RUN as error:
        progress(f"streamd keepup: {error}")
        progress("streamd keepup: the daemon's log is in the folder named above")
        return EXIT_COULD_NOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    echo(result.render())
    if report_path is not None:
        report_path.write_text(json.dumps(result.as_json(), indent=2) + "\n")
        progress(f"streamd keepup: report in {report_path}")
    if not result.ok:
        progress(f"streamd keepup: the daemon's log, JSONL and state kept in {workdir}")
        return EXIT_FAILED
    return EXIT_OK
