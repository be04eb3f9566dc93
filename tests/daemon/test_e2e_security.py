"""Network security end to end: binds beyond loopback refused unless CURVE (or
allow_insecure), CURVE senders let in by key, and no secret in logs or status.

The daemon runs as a real process (tiny model, CPU) binding 0.0.0.0 on a free port;
senders are `streamd send` processes, with and without keys; MQTT goes through a real
Mosquitto that wants a password.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from streamd.connectors.zmq_security import (
    CurveClientKeys,
    load_key_pair,
    load_public_key,
    make_curve_client,
)
from streamd.daemon.config import ConfigError, is_loopback_endpoint, load_config
from streamd.daemon.tools.testing import Broker, clean_env, free_tcp_port, wait_until
from tests.daemon.daemon_testing import (
    Daemon,
    cli,
    daemon_args,
    log_events,
    sample_log_lines,
    write,
)

pytestmark = pytest.mark.network

MQTT_USER = "streamd"
MQTT_PASSWORD = "pw-9f2c-never-printed"
FIXES = (
    "configure CURVE keys (security.zmq_curve_secret_key_file and "
    "security.zmq_curve_authorized_keys), or set security.allow_insecure = true"
)


# --- the rule, as the config applies it --------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True),
        ("tcp://127.8.9.10:5555", True),
        ("tcp://[::1]:5555", True),
        ("tcp://localhost:5555", True),
        ("ipc:///run/streamd/in.sock", True),
        ("tcp://*:5555", False),
        ("tcp://0.0.0.0:5555", False),
        ("tcp://[::]:5555", False),
        ("tcp://192.168.1.20:5555", False),
        ("tcp://eth0:5555", False),
        ("tcp://gpu01.lan:5555", False),
    ],
)
def test_what_counts_as_loopback(endpoint: str, loopback: bool) -> None:
    assert is_loopback_endpoint(endpoint) is loopback


def test_a_bind_beyond_loopback_needs_curve_or_allow_insecure(tmp_path: Path) -> None:
    exposed = '[sources]\nzmq_pull = ["tcp://0.0.0.0:5555"]\n'
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path, exposed), environ={})
    assert str(refused.value) == (
        "sources.zmq_pull = ['tcp://0.0.0.0:5555']: tcp://0.0.0.0:5555 listens beyond "
        f"loopback without authentication (anyone who reaches the port could use it); {FIXES} "
        f"(from {tmp_path / 'streamd.toml'})"
    )
    with pytest.raises(ConfigError, match=r"^outputs\.zmq_pub = 'tcp://\*:1': tcp://\*:1 listens"):
        load_config(write(tmp_path), environ={"STREAMD_OUTPUTS_ZMQ_PUB": "tcp://*:1"})

    insecure = exposed + "[security]\nallow_insecure = true\n"
    assert load_config(write(tmp_path, insecure), environ={}).sources.zmq_pull == (
        "tcp://0.0.0.0:5555",
    )
    # CURVE on binds: no allow_insecure needed (the key files are read at start).
    curve = exposed + (
        '[security]\nzmq_curve_secret_key_file = "/k/streamd.key_secret"\n'
        'zmq_curve_authorized_keys = "/k/clients"\n'
    )
    assert load_config(write(tmp_path, curve), environ={}).security.curve_server


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"security.zmq_curve_authorized_keys": "/k"},
            "security.zmq_curve_authorized_keys = '/k': needs security.zmq_curve_secret_key_file",
        ),
        (
            {"security.zmq_sub_server_key": "/k/pub.key"},
            "security.zmq_sub_server_key = '/k/pub.key': needs security.zmq_curve_secret_key_file",
        ),
        (
            {"security.zmq_curve_secret_key_file": "/k/s.key_secret"},
            "security.zmq_curve_secret_key_file = '/k/s.key_secret': does nothing alone",
        ),
    ],
)
def test_curve_settings_that_cannot_work_are_refused(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(write(tmp_path), environ={}, overrides=settings)
    assert str(refused.value).startswith(message)


# --- the daemon at start -------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Key files as zmq.auth.create_certificates writes them; `clients` holds friend.key."""

    folder: Path

    @property
    def clients(self) -> Path:
        return self.folder / "clients"

    def secret(self, name: str) -> Path:
        return self.folder / f"{name}.key_secret"

    def public(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def secret_z85(self, name: str) -> str:
        secret = zmq.auth.load_certificate(self.secret(name))[1]
        assert secret is not None
        return secret.decode()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    keys = Keys(tmp_path_factory.mktemp("keys"))
    for name in ("streamd", "friend", "stranger"):
        zmq.auth.create_certificates(keys.folder, name)
    keys.clients.mkdir()
    (keys.clients / "friend.key").write_bytes(keys.public("friend").read_bytes())
    return keys


def run_until_exit(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`streamd run` that is expected to stop at start."""
    control = str(folder / "control.sock")
    base = ["run", "--config", str(write(folder)), "--control-socket", control]
    return cli(*base, "--metrics-port", "0", "--no-stdout", *args)


def test_the_daemon_refuses_an_exposed_bind_at_start(tmp_path: Path) -> None:
    bind = f"tcp://0.0.0.0:{free_tcp_port()}"
    done = run_until_exit(tmp_path, "--zmq-bind", bind)
    assert done.returncode == 2  # a configuration error
    assert done.stderr == (
        f"streamd: sources.zmq_pull = ['{bind}']: {bind} listens beyond loopback without "
        f"authentication (anyone who reaches the port could use it); {FIXES} (from --zmq-bind)\n"
    )


def test_a_key_file_that_cannot_work_stops_the_daemon_at_start(
    tmp_path: Path, keys: Keys, tiny_model_dir: Path
) -> None:
    public_only = keys.public("streamd")  # the .key, where the .key_secret belongs
    done = run_until_exit(
        tmp_path, "--model", str(tiny_model_dir), "--device", "cpu",
        "--zmq-curve-secret-key", str(public_only), "--zmq-curve-authorized-keys",
        str(keys.clients),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(  # the last line, after the log events
        f"streamd: security.zmq_curve_secret_key_file = '{public_only}': holds no secret key"
    )


def test_allow_insecure_binds_beyond_loopback_and_says_so(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    port, metrics_port = free_tcp_port(), free_tcp_port()
    args = daemon_args(
        tiny_model_dir, "--zmq-bind", f"tcp://0.0.0.0:{port}", "--allow-insecure",
        "--metrics-host", "0.0.0.0", "--metrics-port", str(metrics_port),
    )  # fmt: skip
    daemon = Daemon(tmp_path, args)
    daemon.start()
    try:
        daemon.wait_ready()
        warnings = [event for event in log_events(daemon.log_path) if "INSECURE" in event["event"]]
        # Observation 13: /metrics beyond loopback bound with no refusal or warning.
        assert [(w["level"], w.get("endpoints"), w.get("host")) for w in warnings] == [
            ("warning", [f"tcp://0.0.0.0:{port}"], None),
            ("warning", None, "0.0.0.0"),
        ]
        assert "/metrics is served beyond loopback" in warnings[1]["event"]
        address = f"tcp://127.0.0.1:{port}"
        done = cli("send", "--push", "--connect", address, stdin=sample_log_lines(3))
        assert done.returncode == 0, done.stderr
        daemon.wait_status(lambda s: s["sources"]["zmq-pull"]["ingested"] == 3, "3 lines in")
    finally:
        assert daemon.stop() == 0, daemon.log()


# --- a daemon with CURVE and an MQTT password ------------------------------------------------


@dataclass
class Secured:
    daemon: Daemon
    pull_port: int
    pub_port: int


@pytest.fixture(scope="module")
def broker(
    tmp_path_factory: pytest.TempPathFactory, module_mosquitto_factory: Callable[..., Broker]
) -> Broker:
    """A broker that lets in only MQTT_USER with MQTT_PASSWORD."""
    workdir = tmp_path_factory.mktemp("mosquitto")
    passwords = workdir / "passwords"
    command = ["mosquitto_passwd", "-b", "-c", str(passwords), MQTT_USER, MQTT_PASSWORD]
    subprocess.run(command, check=True, capture_output=True)
    extra = f"allow_anonymous false\npassword_file {passwords}\n"
    return module_mosquitto_factory(workdir, extra_config=extra)


@pytest.fixture(scope="module")
def secured(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, keys: Keys, broker: Broker
) -> Iterator[Secured]:
    """Binds on every interface, CURVE on; the MQTT password from the environment, as the
    README advises; debug logging, the most a log ever says."""
    pull_port, pub_port = free_tcp_port(), free_tcp_port()
    args = daemon_args(
        tiny_model_dir,
        "--zmq-bind", f"tcp://0.0.0.0:{pull_port}", "--zmq-pub", f"tcp://0.0.0.0:{pub_port}",
        "--zmq-curve-secret-key", str(keys.secret("streamd")),
        "--zmq-curve-authorized-keys", str(keys.clients),
        "--mqtt-host", broker.host, "--mqtt-port", str(broker.port), "--mqtt-topic", "logs/#",
        "--mqtt-username", MQTT_USER, "--mqtt-client-id", f"streamd-secured-{broker.port}",
        "--log-level", "debug",
    )  # fmt: skip
    env = clean_env(STREAMD_SOURCES_MQTT_PASSWORD=MQTT_PASSWORD)
    daemon = Daemon(tmp_path_factory.mktemp("secured"), args, env)
    daemon.start()
    try:
        daemon.wait_ready()
        # The password worked: this broker lets nobody else in.
        daemon.wait_status(lambda s: s["sources"]["mqtt"]["connected"], "the MQTT link")
        yield Secured(daemon, pull_port, pub_port)
    finally:
        assert daemon.stop() == 0, daemon.log()


def send_with(secured: Secured, lines: bytes, *options: str) -> subprocess.CompletedProcess[str]:
    address = f"tcp://127.0.0.1:{secured.pull_port}"
    return cli("send", "--push", "--connect", address, "--timeout", "2", *options, stdin=lines)


def friend_options(keys: Keys) -> list[str]:
    return [
        "--curve-secret-key", str(keys.secret("friend")),
        "--curve-server-key", str(keys.public("streamd")),
    ]  # fmt: skip


def received(status: dict[str, Any]) -> int:
    return int(status["sources"]["zmq-pull"]["received"])


def test_a_sender_with_an_authorized_key_gets_lines_in(secured: Secured, keys: Keys) -> None:
    before = secured.daemon.wait_status(lambda s: s["queue"]["depth"] == 0, "a quiet queue")
    done = send_with(secured, sample_log_lines(5), *friend_options(keys))
    assert done.returncode == 0, done.stderr
    secured.daemon.wait_status(lambda s: received(s) == received(before) + 5, "5 lines in")


@pytest.mark.parametrize(
    ("who", "why"),
    [
        ("stranger", "it refused our CURVE key (ZAP status 400)"),
        # "it requires CURVE: ...", or the same advice if the daemon hung up mid-handshake.
        ("no key", "give our key pair and its public key (--curve-secret-key, --curve-server"),
    ],
)
def test_a_sender_without_an_authorized_key_gets_nothing_in(
    secured: Secured, keys: Keys, who: str, why: str
) -> None:
    before = secured.daemon.wait_status(lambda s: s["queue"]["depth"] == 0, "a quiet queue")
    options = []
    if who == "stranger":
        options = ["--curve-secret-key", str(keys.secret("stranger"))]
        options += ["--curve-server-key", str(keys.public("streamd"))]
    refused = send_with(secured, sample_log_lines(3), *options)
    assert refused.returncode == 1
    assert "sent 0 lines, 3 not sent" in refused.stderr and why in refused.stderr

    # An authorized line after the refused ones: once it is counted, the count is exact.
    assert send_with(secured, b"one authorized line\n", *friend_options(keys)).returncode == 0
    after = secured.daemon.wait_status(
        lambda s: received(s) >= received(before) + 1 and s["queue"]["depth"] == 0,
        "the authorized line",
    )
    assert received(after) == received(before) + 1
    if who == "stranger":  # the daemon names the key it refused (a public key)
        stranger_key = zmq.auth.load_certificate(keys.public("stranger"))[0].decode()
        events = log_events(secured.daemon.log_path)
        refusals = [e for e in events if e["event"] == "zmq connection refused"]
        assert [e["client_key"] for e in refusals] == [stranger_key]


def test_the_summary_pub_socket_serves_an_authorized_subscriber(
    secured: Secured, keys: Keys
) -> None:
    own = load_key_pair("friend", keys.secret("friend"))
    curve = CurveClientKeys(own, load_public_key("streamd", keys.public("streamd")))
    with zmq.Context() as context, context.socket(zmq.SUB) as subscriber:
        make_curve_client(subscriber, curve)
        subscriber.setsockopt(zmq.SUBSCRIBE, b"")
        subscriber.connect(f"tcp://127.0.0.1:{secured.pub_port}")

        def summary_on_zmq() -> bool:
            # A new subscriber misses what is published before it is connected: ask again.
            seq = secured.daemon.summarize()["seq"]
            return bool(subscriber.poll(1000)) and json.loads(subscriber.recv())["seq"] == seq

        wait_until(summary_on_zmq, "a summary on the CURVE PUB socket")
        subscriber.close(linger=0)


def test_send_refuses_curve_options_that_cannot_work(keys: Keys) -> None:
    alone = cli("send", "--curve-secret-key", str(keys.secret("friend")), stdin=b"x\n")
    assert alone.returncode == 2
    assert "--curve-secret-key and --curve-server-key go together" in alone.stderr
    swapped = ["--curve-secret-key", str(keys.public("friend"))]  # the .key, not the pair
    swapped += ["--curve-server-key", str(keys.public("streamd"))]
    done = cli("send", *swapped, stdin=b"x\n")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"streamd: --curve-secret-key = '{keys.public('friend')}': holds no secret key"
    )


def test_no_secret_reaches_the_log_or_status(secured: Secured, keys: Keys) -> None:
    daemon = secured.daemon
    assert send_with(secured, sample_log_lines(2), *friend_options(keys)).returncode == 0
    daemon.wait_status(lambda s: s["queue"]["depth"] == 0, "the lines ingested")
    outputs = {
        "status --json": daemon.ctl("status", "--json").stdout,
        "status": daemon.ctl("status").stdout,
        "the log": daemon.log_path.read_text(errors="replace"),
    }
    secret_key = keys.secret_z85("streamd")
    for where, text in outputs.items():
        assert MQTT_PASSWORD not in text, where
        assert secret_key not in text, where
    # The log does speak of both, so the checks above looked where a leak would be.
    events = {event["event"]: event for event in log_events(daemon.log_path)}
    config = events["starting"]["config"]
    assert config["sources"]["mqtt"]["password"] == "***"
    assert config["security"]["zmq_curve_authorized_keys"] == str(keys.clients)
    assert events["zmq CURVE on"]["authorized_keys"] == 1
