"""Fixtures shared by every test folder: a tiny model dir, free ports, a real Mosquitto."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import make_tiny_model_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama + the real SmolLM2 tokenizer, saved once per test run."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


# --- A real Mosquitto broker on a free loopback port -------------------------

import getpass  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

from streamd.daemon.soak.broker import accepts_tcp, free_tcp_port  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Mosquitto:
    """A mosquitto process on 127.0.0.1:port. stop() and start() keep the port,
    so tests can restart the broker under connected clients.

    With `persistence_dir`, sessions, subscriptions and queued messages are
    saved there and survive a restart, a SIGKILL too: the database is saved
    after every change (autosave_on_changes, interval 1), not only at exit.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        port: int,
        extra_config: str = "",
        persistence_dir: Path | None = None,
    ) -> None:
        self.port = port
        self.config_path = workdir / f"mosquitto-{port}.conf"
        self.log_path = workdir / f"mosquitto-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        # persistence false: sessions live in memory, for as long as this process runs.
        persistence = "persistence false\n"
        if persistence_dir is not None:
            persistence_dir.mkdir(parents=True, exist_ok=True)
            persistence = (
                f"persistence true\npersistence_location {persistence_dir}/\n"
                "autosave_interval 1\nautosave_on_changes true\n"
            )
        # user: started as root, mosquitto would switch to user "mosquitto", who
        # cannot read certificates in pytest's private temp folders.
        self.config_path.write_text(
            f"listener {port} {self.host}\nallow_anonymous true\n{persistence}"
            f"user {getpass.getuser()}\nlog_dest stderr\n{extra_config}"
        )

    def start(self, timeout_s: float = 5.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        # It listens before loading certificates, so a bare TCP accept is not
        # ready yet: wait for its "running" log line too.
        while not (" running" in self.log() and accepts_tcp(self.host, self.port)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{self.log()}")
            time.sleep(0.02)

    def stop(self, kill: bool = False) -> None:
        """Terminate (or SIGKILL) the broker and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill() if kill else self.process.terminate()
            self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


MosquittoFactory = Callable[[str], Mosquitto]


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[MosquittoFactory]:
    """Starts brokers with extra config lines (TLS, auth, limits); all stopped at teardown."""
    if not Path(MOSQUITTO).exists():
        pytest.fail(
            "mosquitto not found: apt-get install mosquitto, or deselect with -m 'not network'"
        )
    started: list[Mosquitto] = []

    def start(extra_config: str = "") -> Mosquitto:
        for attempt in range(3):  # another process may take the free port before mosquitto does
            broker = Mosquitto(tmp_path, free_tcp_port(), extra_config)
            try:
                broker.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        started.append(broker)
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def mosquitto(mosquitto_factory: MosquittoFactory) -> Mosquitto:
    """A fresh plain broker per test; stopped at teardown whatever the test did to it."""
    return mosquitto_factory("")


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port with nothing listening on it (for "nobody there" tests too)."""
    return free_tcp_port()
