"""Fixtures shared by every test folder: a tiny model dir, free ports, a real Mosquitto."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.tools.testing import Broker, BrokerError, find_mosquitto, free_tcp_port

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import make_tiny_model_dir


@pytest.fixture(scope="session", autouse=True)
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache of converted weights for the run (daemons started by tests inherit it):
    the default model converts once, and nothing lands in the user's ~/.cache."""
    folder = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STREAMD_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama + the real SmolLM2 tokenizer, saved once per test run."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


# --- A real Mosquitto broker on a free loopback port -------------------------

BrokerFactory = Callable[[str], Broker]


@contextlib.contextmanager
def _brokers(default_workdir: Callable[[], Path]) -> Iterator[Callable[..., Broker]]:
    """start(workdir=None, **options) -> a started Broker (options as for Broker()); every
    broker started is stopped on exit."""
    try:
        find_mosquitto()
    except BrokerError as error:
        pytest.fail(f"{error}, or deselect with -m 'not network'")
    started: list[Broker] = []

    def start(workdir: Path | None = None, **options: Any) -> Broker:
        broker = Broker.start_on_free_port(workdir or default_workdir(), **options)
        started.append(broker)
        return broker

    try:
        yield start
    finally:
        for broker in started:
            broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[BrokerFactory]:
    """Starts brokers with extra config lines (TLS, auth, limits); all stopped at teardown."""
    with _brokers(lambda: tmp_path) as start:
        yield lambda extra_config="": start(extra_config=extra_config)


@pytest.fixture(scope="module")
def module_mosquitto_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Broker]]:
    """Starts brokers that serve a whole module (as its one daemon does): start(workdir=None,
    **options) with Broker's options (persistence, extra_config, ...), in a fresh workdir
    unless one is given. All stopped when the module is done."""
    with _brokers(lambda: tmp_path_factory.mktemp("mosquitto")) as start:
        yield start


@pytest.fixture
def mosquitto(mosquitto_factory: BrokerFactory) -> Broker:
    """A fresh plain broker per test; stopped at teardown whatever the test did to it."""
    return mosquitto_factory("")


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port with nothing listening on it (for "nobody there" tests too)."""
    return free_tcp_port()
