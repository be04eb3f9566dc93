"""`streamd run` as a subprocess of the soak: started, asked for its status, SIGKILLed, stopped.

Its stdout and stderr go to a file (a pipe nobody reads would fill up and
block the daemon). The environment loses what would steer the daemon behind
the soak's back: STREAMD_* settings and a systemd notify socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..control import ControlClient, ControlError
from .waiting import poll_until

CLI = (sys.executable, "-m", "streamd.daemon.cli")
_LEAKS = ("STREAMD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
STATUS_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 60.0  # SIGTERM drains the queue and writes a final summary


class DaemonExited(RuntimeError):
    """The daemon ended when the soak did not end it; the message has its last log lines."""


def daemon_env() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(_LEAKS)}
    return env | {"PYTHONUNBUFFERED": "1"}


class DaemonProcess:
    def __init__(self, run_args: list[str], control_socket: Path, log_path: Path) -> None:
        self.run_args = run_args  # everything after `streamd run`
        self.control_socket = control_socket
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [*CLI, "run", *self.run_args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=daemon_env()
            )

    @property
    def pid(self) -> int:
        return self._started().pid

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("start() the daemon first")
        return self.process

    def check_running(self) -> None:
        code = self._started().poll()
        if code is not None:
            raise DaemonExited(f"the daemon exited with {code}:\n{self.log_tail()}")

    def status(self) -> dict[str, Any] | None:
        """The status document, or None while nothing answers."""
        try:
            with ControlClient(self.control_socket, STATUS_TIMEOUT_S) as client:
                return client.request("status")
        except ControlError:
            return None

    def wait_status(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout_s: float
    ) -> dict[str, Any]:
        """The first status document that passes `check`; raises DaemonExited if it dies."""

        def matching() -> dict[str, Any] | None:
            self.check_running()
            doc = self.status()
            return doc if doc is not None and check(doc) else None

        return poll_until(matching, what, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no final summary, nothing saved on the way out."""
        process = self._started()
        process.kill()
        process.wait()

    def stop(self) -> int:
        """SIGTERM and the exit code (SIGKILL, and -9, if it ignores SIGTERM)."""
        process = self._started()
        process.terminate()
        try:
            return process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]
