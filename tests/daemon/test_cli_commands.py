"""The CLI where no daemon (or a broken start) is the point: exit codes and messages."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from streamd.daemon import cli as cli_module
from streamd.daemon.config import config_keys, env_var_for
from streamd.daemon.run_options import RUN_OPTIONS, missing_keys
from streamd.daemon.tools.testing import clean_env, free_zmq_endpoint
from tests.daemon.daemon_testing import cli


def test_every_config_key_has_a_run_option() -> None:
    assert missing_keys() == []
    assert len({option.flag for option in RUN_OPTIONS}) == len(RUN_OPTIONS) == len(config_keys())


def test_the_cli_default_model_is_the_loaders() -> None:
    from streamd.daemon.engine.loading import DEFAULT_MODEL

    assert cli_module.DEFAULT_MODEL == DEFAULT_MODEL


def test_the_shared_options_default_to_the_daemons_settings() -> None:
    """demo, eval, bench, soak, keepup and eval-summaries share one --max-capacity and
    --chunk: each command shows the daemon's own default."""
    from streamd.daemon.config import CacheConfig

    daemon = CacheConfig()
    for command in ("demo", "eval", "bench", "soak", "keepup", "eval-summaries"):
        params = {p.name: p for p in cli_module.main.commands[command].params}
        assert params["max_capacity"].default == daemon.max_capacity, command
        if "chunk" in params:
            assert params["chunk"].default == daemon.chunk, command


def test_run_help_names_each_key_and_its_environment_variable() -> None:
    result = CliRunner().invoke(cli_module.main, ["run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # as read, not as wrapped
    for option in RUN_OPTIONS:
        assert option.flag in text
        assert f"${env_var_for(option.key)}" in text
    assert "[default: 1024; cache.max_capacity; $STREAMD_CACHE_MAX_CAPACITY]" in text


@pytest.mark.parametrize("command", ["status", "tune", "summarize", "summaries", "send"])
def test_each_command_explains_itself(command: str) -> None:
    result = CliRunner().invoke(cli_module.main, [command, "--help"])
    assert result.exit_code == 0
    if command != "send":
        assert "--control-socket" in result.output and "STREAMD_CONTROL_SOCKET" in result.output
        assert "--json" in result.output


def test_status_without_a_daemon_exits_1_and_says_where_it_looked(tmp_path: Path) -> None:
    done = cli("status", "--control-socket", str(tmp_path / "control.sock"))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"streamd: no streamd daemon answering on {tmp_path}")


def test_the_control_socket_comes_from_the_environment_too(tmp_path: Path) -> None:
    env = clean_env(STREAMD_CONTROL_SOCKET=str(tmp_path / "elsewhere.sock"))
    done = cli("summarize", env=env)
    assert done.returncode == 1
    assert "elsewhere.sock" in done.stderr


def test_tune_needs_a_value(tmp_path: Path) -> None:
    done = cli("tune", "--control-socket", str(tmp_path / "control.sock"))
    assert done.returncode == 2
    assert "give at least one of --max-capacity" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-capacity", "-3"], "cache.max_capacity = -3: must be an integer from 8 to 1048576 "
                                   "(from --max-capacity)"),
        (["--zmq-bind", "5555"], "sources.zmq_pull = ['5555']: must be ZeroMQ endpoints"),
        (["--device", "gpu"], "model.device = 'gpu': must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        (["--mqtt-summary-topic", "out"], "outputs.mqtt_topic = 'out': needs sources.mqtt.host"),
        (["--config", "/nonexistent/streamd.toml"], "config file /nonexistent/streamd.toml does "
                                                     "not exist (see --config)"),
    ],
)  # fmt: skip
def test_run_refuses_a_bad_setting_in_one_line_with_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    config = tmp_path / "streamd.toml"
    config.write_text("")
    base = ["run", "--config", str(config), "--control-socket", str(tmp_path / "c.sock")]
    done = cli(*base, *args)
    assert done.returncode == 2
    assert done.stderr.startswith("streamd: ") and message in done.stderr
    assert done.stderr.count("\n") == 1  # one line


def test_run_with_a_busy_address_exits_1_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        config = tmp_path / "streamd.toml"
        config.write_text("")
        control = tmp_path / "control.sock"
        done = cli("run", "--config", str(config), "--control-socket", str(control),
                   "--metrics-port", "0", "--zmq-bind", address)  # fmt: skip
    assert done.returncode == 1
    # The log events come first on stderr (stdout is the summaries'); the last line says why.
    last = done.stderr.splitlines()[-1]
    assert last.startswith("streamd: sources.zmq_pull: cannot open: Address already in use")
    assert not control.exists()  # what it opened, it closed


def run_with_model(tmp_path: Path, model: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "streamd.toml"
    config.write_text("")
    return cli("run", "--config", str(config), "--control-socket", str(tmp_path / "c.sock"),
               "--metrics-port", "0", "--zmq-bind", free_zmq_endpoint(), "--device", "cpu",
               "--model", model)  # fmt: skip


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("nosuchmodel", "not in the local Hugging Face cache"),  # the tests run offline
        ("{tmp}/no-such-model", "no such directory"),
        ("{tmp}", "the directory has no config.json"),
    ],
)
def test_run_with_a_model_that_cannot_load_fails_before_starting(
    tmp_path: Path, model: str, why: str
) -> None:
    """#11, observation 15: `--model nosuchmodel` took 53 s to fail (transformers retrying
    the hub). Now exit 2 before the daemon starts (no log event at all: nothing was loaded,
    nothing opened), naming the value and where to look."""
    name = model.format(tmp=tmp_path)
    done = run_with_model(tmp_path, name)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [done.stderr.strip()]  # one line, no "starting" event
    assert done.stderr.startswith(f"streamd: model.name = {name!r}: {why}")
    assert "`streamd models`" in done.stderr
    assert not (tmp_path / "c.sock").exists()


def test_run_asking_for_a_gpu_where_there_is_none_is_a_bad_setting(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = cli("run", "--control-socket", str(tmp_path / "c.sock"), "--metrics-port", "0",
               "--zmq-bind", free_zmq_endpoint(), "--device", "cuda")  # fmt: skip
    assert done.returncode == 2, done.stderr  # it was 1, as if the daemon had failed
    assert "device 'cuda' asked for, but no CUDA GPU is visible; use cpu" in done.stderr


def test_send_reports_what_it_could_not_send(free_port: int) -> None:
    address = f"tcp://127.0.0.1:{free_port}"
    done = cli("send", "--push", "--connect", address, "--timeout", "0.2", stdin=b"a\n\nb\nc\n")
    assert done.returncode == 1
    assert done.stderr.startswith("streamd: send: sent 0 lines, 3 not sent, 1 blank skipped;")
    assert f"no receiver at {address}" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mqtt-topic", "logs"], "--mqtt-topic needs --mqtt-host"),
        (["--mqtt-host", "127.0.0.1"], "--mqtt-topic is missing"),
        (["--connect", "nowhere"], "send address = 'nowhere': a ZeroMQ address looks like"),
    ],
)
def test_send_usage_errors_exit_2(args: list[str], message: str) -> None:
    done = cli("send", *args, stdin=b"x\n")
    assert done.returncode == 2
    assert message in done.stderr
