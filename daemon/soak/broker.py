"""A Mosquitto broker of the soak's own: loopback, a free port, persistence on, restartable.

Persistence is on so that a restart keeps what QoS 1 promised: on SIGTERM
Mosquitto saves the daemon's persistent session (its subscription and the
messages queued or in flight for it) and loads it again on start, so a broker
restart costs duplicates at worst, never a lost message.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3  # another process may take a free port before Mosquitto binds it
# The soak counts every message, so the broker must not drop any on its own:
# Mosquitto's default queue (1000 messages per client) would, for a slow subscriber.
MAX_QUEUED_MESSAGES = 1_000_000


class BrokerError(RuntimeError):
    """Mosquitto is missing or would not start; the message says what to do."""


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise BrokerError("mosquitto not found: install it (apt-get install mosquitto)")
    return found


def free_tcp_port() -> int:
    """A loopback port nothing listens on right now (the OS picks it; a tiny race remains)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
        deadline = time.monotonic() + START_TIMEOUT_S
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
                self.process.wait(STOP_TIMEOUT_S)
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


def start_soak_broker(workdir: Path) -> Broker:
    """The soak's broker: persistence on, and no queue limit that would drop messages."""
    return Broker.start_on_free_port(
        workdir, persistence_dir=workdir, max_queued_messages=MAX_QUEUED_MESSAGES
    )
