"""Helpers for the daemon tests: `streamd run` as a real subprocess, the CLI, a notify socket.

Import as `from tests.daemon.daemon_testing import ...` (pytest registers the
`tests` package under --import-mode=importlib).
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamd.daemon.config import CacheConfig, Config, ModelConfig, SummaryConfig, load_config
from streamd.daemon.tools.testing import CLI, DaemonProcess, clean_env

START_TIMEOUT_S = 60.0  # imports and the tiny model take ~6 s; a loaded CI machine, more
STOP_TIMEOUT_S = 30.0


def cli(
    *args: str,
    stdin: bytes | None = None,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `streamd ARGS` to the end; text stdout and stderr."""
    return subprocess.run(
        [*CLI, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env or clean_env(),
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON events of a daemon log (its stdout is a file, so it logs JSON), each from
    its line's first "{"; lines without one, or not JSON from there, are skipped."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start < 0:
            continue
        with contextlib.suppress(ValueError):
            events.append(json.loads(line[start:]))
    return events


# --- status documents -------------------------------------------------------------------------


def row(status: dict[str, Any], source: str) -> dict[str, Any]:
    """One source's counters in a status document."""
    return dict(status["sources"][source])


def all_counted(status: dict[str, Any], source: str, received: int) -> bool:
    """`source` has received `received` messages, and each is counted ingested, dropped,
    rejected or queued: received = the sum, exactly. Whether the queue is empty is the
    caller's to add (this source's share of it, or the daemon's whole queue)."""
    r = row(status, source)
    accounted = r["ingested"] + r["dropped"] + r["rejected"] + r["queued"]
    return bool(r["received"] == received == accounted)


# --- config files and in-process configs ------------------------------------------------------

# A fixed environment so defaults that follow $RUNTIME_DIRECTORY etc. are the same everywhere.
BASE_ENV = {"RUNTIME_DIRECTORY": "/run/streamd", "STATE_DIRECTORY": "/var/lib/streamd"}


def write(folder: Path, text: str = "") -> Path:
    """`text` as folder/streamd.toml; its path."""
    path = folder / "streamd.toml"
    path.write_text(text)
    return path


def load(folder: Path, text: str = "", **env: str) -> Config:
    """`text` as a config file, loaded in BASE_ENV plus `env`."""
    return load_config(write(folder, text), environ=BASE_ENV | env)


def tiny_config(
    model_dir: Path,
    every_tokens: int = 0,
    *,
    max_tokens: int = 8,
    chunk: int = 64,
    state_dir: Path | None = None,
) -> Config:
    """The tiny model on the CPU in a 256-token cache; summaries only when asked (or every
    `every_tokens`). Config's own state_dir unless `state_dir` is given."""
    state = {"state_dir": state_dir} if state_dir is not None else {}
    return Config(
        model=ModelConfig(name=str(model_dir), device="cpu"),
        cache=CacheConfig(max_capacity=256, chunk=chunk),
        summary=SummaryConfig(every_tokens=every_tokens, every_seconds=0.0, max_tokens=max_tokens),
        **state,
    )


class Daemon(DaemonProcess):
    """`streamd run` with a control socket, a JSONL output, a state dir and a config file of
    its own; its status asked through the CLI (`streamd status --json`)."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.control = workdir / "control.sock"
        self.jsonl = workdir / "summaries.jsonl"
        # Its own, never the user's ~/.local/state/streamd: snapshots would carry over.
        self.state_dir = workdir / "state"
        self.config = workdir / "streamd.toml"  # empty: no /etc/streamd/streamd.toml leaks in
        self.config.write_text("")
        self.args = args
        run_args = [
            "--config", str(self.config), "--control-socket", str(self.control),
            "--jsonl", str(self.jsonl), "--no-stdout", "--state-dir", str(self.state_dir), *args,
        ]  # fmt: skip
        super().__init__(run_args, self.control, workdir / "daemon.log", env)

    def ctl(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A control command (status, tune, ...) aimed at this daemon."""
        return cli(*args, "--control-socket", str(self.control), timeout_s=timeout_s)

    def status(self) -> dict[str, Any] | None:
        """The status document, or None while nothing answers."""
        done = self.ctl("status", "--json")
        return json.loads(done.stdout) if done.stdout.strip() else None

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> dict[str, Any]:
        return self.wait_status(
            lambda doc: doc["state"] == "ready", "the daemon to be ready", timeout_s
        )

    def summaries(self) -> list[dict[str, Any]]:
        return read_jsonl(self.jsonl)

    def summarize(self) -> dict[str, Any]:
        """`streamd summarize --json` at this daemon: the new summary record."""
        done = self.ctl("summarize", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then the exit code (SIGKILL after timeout_s, and the test fails)."""
        if self.process is None:
            return 0
        code = super().stop(timeout_s)
        assert not self.ignored_sigterm, (
            f"the daemon ignored SIGTERM for {timeout_s}s:\n{self.log()}"
        )
        return code

    def log(self) -> str:
        return self.log_tail(6000)


class NotifySocket:
    """What systemd listens on for sd_notify: an AF_UNIX datagram socket, read in a thread
    (unread datagrams would fill its queue and block the daemon's sends)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                self.messages.append(self._sock.recv(4096).decode())
            except TimeoutError:
                continue

    def lines(self) -> list[str]:
        """Every NAME=value line received, in order (one datagram may hold several)."""
        return [line for message in list(self.messages) for line in message.split("\n")]

    def saw(self, prefix: str) -> bool:
        return any(line.startswith(prefix) for line in self.lines())

    def close(self) -> None:
        self._closed.set()
        self._reader.join()
        self._sock.close()


def sample_log_lines(count: int) -> bytes:
    """Real log lines (daemon/data/fail2ban-sample.log), as `streamd send` reads them."""
    text = (Path(__file__).parents[2] / "daemon" / "data" / "fail2ban-sample.log").read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    return "".join(lines[i % len(lines)] + "\n" for i in range(count)).encode()


def daemon_args(model_dir: Path, *extra: str) -> list[str]:
    """The tiny model on the CPU, small enough that the cache fills after a few lines."""
    return [
        "--model", str(model_dir), "--device", "cpu", "--max-capacity", "256",
        "--chunk", "64", "--summary-max-tokens", "8", "--summary-every-tokens", "0",
        "--summary-every-seconds", "0", "--metrics-port", "0", *extra,
    ]  # fmt: skip


def signal_name(code: int) -> str:
    return signal.Signals(-code).name if code < 0 else str(code)


@contextlib.contextmanager
def serving(daemon: Daemon) -> Iterator[Daemon]:
    """The daemon started and ready for the block; stopped after it, and it must exit 0."""
    daemon.start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()
