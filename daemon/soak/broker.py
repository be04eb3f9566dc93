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
    """mosquitto on 127.0.0.1:port; stop() and start() keep the port and the saved sessions."""

    host = "127.0.0.1"

    def __init__(self, workdir: Path, port: int) -> None:
        self.port = port
        self.workdir = workdir
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._config())

    def _config(self) -> str:
        # user: started as root, Mosquitto switches to user "mosquitto", who cannot
        # write the persistence file into a private temporary folder.
        return (
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
            f"user {getpass.getuser()}\n"
            "log_dest stderr\n"
        )

    @classmethod
    def start_on_free_port(cls, workdir: Path) -> Broker:
        attempts_left = PORT_ATTEMPTS
        while True:
            broker = cls(workdir, free_tcp_port())
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
        # It listens before it has loaded everything: wait for its "running" line too.
        while not (" running" in self._log_text()[before:] and accepts_tcp(self.host, self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                why = self._log_text()[before:][-2000:]
                raise BrokerError(f"mosquitto did not start on port {self.port}:\n{why}")
            time.sleep(0.02)
        self.starts += 1

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its sessions) and wait; SIGKILL if it hangs."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def _log_text(self) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")
