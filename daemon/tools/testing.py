"""What the soak and the tests share: Mosquitto on a free port, `streamd run` as a
subprocess, waiting on a condition, free ports and a clean environment (no torch here)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..control.client import ControlClient
from ..control.protocol import ControlError

T = TypeVar("T")

CLI = (sys.executable, "-m", "streamd.daemon.cli")
# What would steer a daemon under test behind its back: a developer's STREAMD_* settings,
# a systemd notify socket.
_LEAKS = ("STREAMD_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")
STATUS_TIMEOUT_S = 5.0
# How long a wait on a condition may take before it fails. Generous: a wait that succeeds
# returns at once, and a loaded CI machine (2 cores, other jobs) can be ten times slower.
WAIT_S = 120.0
DAEMON_STOP_S = 60.0  # SIGTERM drains the queue and writes a final summary


# --- waiting, ports, environment ---------------------------------------------------------------


class WaitTimeout(AssertionError):
    """What a test or the soak waited for did not happen in time; the message says what."""


def wait_until(
    check: Callable[[], T | None], what: str, timeout_s: float = WAIT_S, every_s: float = 0.05
) -> T:
    """Call `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise WaitTimeout(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)
    return value


def free_tcp_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it; a tiny race remains)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_zmq_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_tcp_port()}"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would leak into a daemon under test, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(_LEAKS)}
    env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return env | extra


# --- `streamd run` as a subprocess --------------------------------------------------------------


class DaemonExited(RuntimeError):
    """The daemon ended when nobody ended it; the message has its last log lines."""


class DaemonProcess:
    """`streamd run ARGS` with its stdout and stderr in a file (a pipe that nobody reads
    would fill up and block the daemon): started, asked for its status, killed, stopped."""

    def __init__(
        self,
        run_args: list[str],
        control_socket: Path,
        log_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.run_args = run_args  # everything after `streamd run`
        self.control_socket = control_socket
        self.log_path = log_path
        self.env = env or clean_env()
        self.process: subprocess.Popen[bytes] | None = None
        self.ignored_sigterm = False  # the last stop() had to SIGKILL it

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*CLI, "run", *self.run_args], stdout=log, stderr=subprocess.STDOUT, env=self.env
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
        return self.status_or_error()[0]

    def status_or_error(
        self, timeout_s: float = STATUS_TIMEOUT_S
    ) -> tuple[dict[str, Any] | None, str]:
        """(the status document, ""), or (None, why not: the client's error)."""
        try:
            with ControlClient(self.control_socket, timeout_s) as client:
                return client.request("status"), ""
        except ControlError as error:
            return None, f"{type(error).__name__}: {error}"

    def wait_status(
        self, check: Callable[[dict[str, Any]], bool], what: str, timeout_s: float = WAIT_S
    ) -> dict[str, Any]:
        """The first status document that passes `check`; DaemonExited if the daemon dies."""

        def matching() -> dict[str, Any] | None:
            self.check_running()
            doc = self.status()
            return doc if doc and check(doc) else None

        return wait_until(matching, what, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no drain, no final summary, nothing saved on the way out."""
        process = self._started()
        process.kill()
        process.wait()

    def stop(self, timeout_s: float = DAEMON_STOP_S) -> int:
        """SIGTERM and the exit code; SIGKILL (and -9, ignored_sigterm) after timeout_s."""
        process = self._started()
        if process.poll() is None:
            process.terminate()
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.ignored_sigterm = True
            process.kill()
            return process.wait()

    def wait_exit(self, timeout_s: float = DAEMON_STOP_S) -> int:
        """The exit code of a daemon already told to stop, without another signal (a third
        SIGTERM could land after it restored its handlers, and kill it); SIGKILL and
        WaitTimeout after timeout_s."""
        process = self._started()
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise WaitTimeout(f"the daemon did not exit within {timeout_s:.0f}s") from None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


# --- Mosquitto on a free loopback port ----------------------------------------------------------

BROKER_START_S = 10.0
BROKER_STOP_S = 10.0
PORT_ATTEMPTS = 3  # another process may take a free port before Mosquitto binds it


class BrokerError(RuntimeError):
    """Mosquitto is missing or would not start; the message says what to do."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise BrokerError("mosquitto not found: install it (apt-get install mosquitto)")
    return found


def accepts_tcp(host: str, port: int) -> bool:
    """Whether something listens on host:port (a connection opens within 0.2 s)."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """mosquitto on 127.0.0.1:port; stop() and start() keep the port (and what it saved).

    With `persistence_dir`, sessions, subscriptions and queued messages are saved
    there on SIGTERM and loaded again on start; with `save_every_change` too, after
    every change, so they survive a SIGKILL. `extra_config` lines (TLS, passwords,
    limits) go at the end of the config file.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        port: int,
        *,
        extra_config: str = "",
        persistence_dir: Path | None = None,
        save_every_change: bool = False,
        max_queued_messages: int | None = None,
    ) -> None:
        self.port = port
        self.config_path = workdir / f"mosquitto-{port}.conf"
        self.log_path = workdir / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)
        if persistence_dir is not None:
            persistence_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            self._config(persistence_dir, save_every_change, max_queued_messages) + extra_config
        )

    def _config(
        self, persistence_dir: Path | None, save_every_change: bool, max_queued: int | None
    ) -> str:
        # persistence false: sessions live in memory, for as long as this process runs
        persistence = "persistence false\n"
        if persistence_dir is not None:
            persistence = f"persistence true\npersistence_location {persistence_dir}/\n"
            if save_every_change:
                persistence += "autosave_interval 1\nautosave_on_changes true\n"
        queue = f"max_queued_messages {max_queued}\n" if max_queued is not None else ""
        # user: started as root, Mosquitto switches to user "mosquitto", who can read
        # neither certificates nor its database in a private temporary folder.
        return (
            f"listener {self.port} {self.host}\nallow_anonymous true\n{persistence}{queue}"
            f"user {getpass.getuser()}\nlog_dest stderr\n"
        )

    @classmethod
    def start_on_free_port(cls, workdir: Path, **options: Any) -> Broker:
        """A started broker on a port the OS picked; `options` as for Broker()."""
        attempts_left = PORT_ATTEMPTS
        while True:
            broker = cls(workdir, free_tcp_port(), **options)
            try:
                broker.start()
                return broker
            except BrokerError:
                attempts_left -= 1
                if not attempts_left:
                    raise

    def start(self) -> None:
        """Start and wait until it accepts connections; raises BrokerError if it does not."""
        before = len(self._log_text())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [find_mosquitto(), "-c", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + BROKER_START_S
        # It listens before it has loaded its certificates and database: wait for
        # this start's "running" line too.
        while not (" running" in self._log_text()[before:] and accepts_tcp(self.host, self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                why = self._log_text()[before:][-2000:]
                raise BrokerError(f"mosquitto did not start on port {self.port}:\n{why}")
            time.sleep(0.02)
        self.starts += 1

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Mosquitto saves its sessions) or SIGKILL, and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(BROKER_STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self, chars: int = 4000) -> str:
        """The end of its log (for assertion messages)."""
        return self._log_text()[-chars:]

    def _log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")
