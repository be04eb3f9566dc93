"""The steady feed: real log lines written one by one, on a fixed schedule, into the stdin
of `streamd send` (acked: a line counts as sent once the daemon has spooled it).

Line i is due i / rate seconds after the feed starts. A write that blocks (the sender's
window of unacknowledged lines is full, so the daemon is not even spooling) makes the
next lines late; the lines due by then go out at once, and the lateness is kept: a
backlog in the sender is lag the daemon's status cannot see.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from ..testing import CLI

SEND_TIMEOUT_S = 30.0  # `streamd send --timeout`: how long acknowledgements may stall


def bundled_log_lines() -> list[bytes]:
    """Every non-blank line of the real logs bundled in daemon/data (*.log, by name;
    their sources in daemon/data/SOURCES.md)."""
    folder = resources.files("streamd.daemon.data")
    logs = sorted((f for f in folder.iterdir() if f.name.endswith(".log")), key=lambda f: f.name)
    return [line for log in logs for line in log.read_bytes().splitlines() if line.strip()]


def file_lines(paths: Sequence[Path]) -> list[bytes]:
    """The non-blank lines of these files, in order."""
    return [line for p in paths for line in p.read_bytes().splitlines() if line.strip()]


class Feeder(threading.Thread):
    """Writes `count` lines (cycled) to `streamd send`, `rate` a second from `started_at`
    (time.monotonic()); `sent` counts the lines written so far."""

    def __init__(
        self,
        lines: Sequence[bytes],
        rate: float,
        count: int,
        env: dict[str, str],
        log_path: Path,
        started_at: float,
    ) -> None:
        super().__init__(name="keepup-feeder", daemon=True)
        if not lines:
            raise ValueError("no lines to feed: the log files are empty")
        self.lines = lines
        self.rate = rate
        self.count = count
        self.started_at = started_at
        self.sent = 0
        self.max_late_s = 0.0  # how far behind its schedule a line went out, at worst
        self.ended_at: float | None = None  # when the last line was written (monotonic)
        self.error: BaseException | None = None
        self._stopping = threading.Event()
        with log_path.open("ab") as log:
            args = [*CLI, "send", "--timeout", str(SEND_TIMEOUT_S)]
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.log_path = log_path

    def run(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            for i in range(self.count):
                due = self.started_at + i / self.rate
                if self._stopping.wait(max(0.0, due - time.monotonic())):
                    break
                self.max_late_s = max(self.max_late_s, time.monotonic() - due)
                stdin.write(self.lines[i % len(self.lines)] + b"\n")
                stdin.flush()
                self.sent = i + 1
        except BaseException as error:  # a broken pipe: `streamd send` died
            self.error = error
        finally:
            self.ended_at = time.monotonic()
            with contextlib.suppress(OSError):  # EOF: send waits for the last acknowledgements
                stdin.close()

    def stop(self) -> None:
        """Stop writing (Ctrl-C, a dead daemon): `streamd send` gets EOF."""
        self._stopping.set()

    def wait_sent(self, timeout_s: float) -> int | None:
        """`streamd send`'s exit code once every line is acknowledged (0) or given up on
        (1); None if it is still at it after timeout_s."""
        self.join(timeout_s)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        self.stop()
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]
