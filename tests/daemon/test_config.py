"""Config loading: precedence, parsing, and error messages that name the key and the fix."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import cast

import pytest

from streamd.daemon.config import (
    DEFAULT_CONFIG_PATH,
    CacheConfig,
    Config,
    ConfigError,
    ControlConfig,
    MqttConfig,
    SourcesConfig,
    config_keys,
    control_socket_candidates,
    default_client_id,
    env_var_for,
    find_control_socket,
    load_config,
    unknown_environment,
)
from tests.daemon.daemon_testing import BASE_ENV, cli, load, write

EXAMPLE = Path(__file__).parents[2] / "systemd" / "streamd.toml"


def test_defaults_follow_systemd_directories() -> None:
    if DEFAULT_CONFIG_PATH.exists():
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this machine")
    config = load_config(environ=BASE_ENV)  # a missing default file is fine
    assert config.control.socket == Path("/run/streamd/control.sock")
    assert config.state_dir == Path("/var/lib/streamd")
    assert config.cache.max_capacity == 1024
    assert config.sources.zmq_pull == ("tcp://127.0.0.1:5555",)
    assert not config.sources.mqtt.enabled


def test_runtime_dir_falls_back_to_xdg_then_run() -> None:
    assert control_socket_candidates({"XDG_RUNTIME_DIR": "/run/user/7"}) == [
        Path("/run/user/7/streamd/control.sock"),
        Path("/run/streamd/control.sock"),
    ]
    assert control_socket_candidates({"RUNTIME_DIRECTORY": "/run/streamd/1:/run/other"})[0] == Path(
        "/run/streamd/1/control.sock"
    )


def test_find_control_socket_prefers_option_then_env_then_existing(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    assert find_control_socket("/x.sock", env) == Path("/x.sock")
    assert find_control_socket(None, env | {"STREAMD_CONTROL_SOCKET": "/y"}) == Path("/y")
    env_with_runtime = env | {"RUNTIME_DIRECTORY": str(tmp_path / "absent")}
    assert find_control_socket(None, env_with_runtime) == tmp_path / "absent" / "control.sock"
    existing = tmp_path / "streamd" / "control.sock"
    existing.parent.mkdir()
    existing.touch()
    assert find_control_socket(None, env_with_runtime) == existing


def test_mqtt_client_id_is_distinct_per_gpu_instance() -> None:
    host = socket.gethostname()
    assert default_client_id({}) == f"streamd-{host}"
    assert default_client_id({"CUDA_VISIBLE_DEVICES": "1"}) == f"streamd-{host}-gpu1"
    assert default_client_id({"CUDA_VISIBLE_DEVICES": "0,1"}) == f"streamd-{host}"
    config = load_config(EXAMPLE, environ=BASE_ENV | {"CUDA_VISIBLE_DEVICES": "3"})
    assert config.sources.mqtt.client_id == f"streamd-{host}-gpu3"


def test_example_config_loads_and_equals_the_defaults() -> None:
    config = load_config(EXAMPLE, environ=BASE_ENV)
    defaults = Config(
        sources=SourcesConfig(mqtt=MqttConfig(client_id=default_client_id(BASE_ENV))),
        control=ControlConfig(socket=Path("/run/streamd/control.sock")),
        state_dir=Path("/var/lib/streamd"),
    )
    assert config == defaults


def test_file_environment_and_overrides_stack_in_that_order(tmp_path: Path) -> None:
    path = write(
        tmp_path, "[cache]\nmax_capacity = 2048\nchunk = 64\n[summary]\nevery_seconds = 5\n"
    )
    env = BASE_ENV | {"STREAMD_CACHE_MAX_CAPACITY": "4096", "STREAMD_CACHE_CHUNK": "128"}
    config = load_config(path, environ=env, overrides={"cache.chunk": 32, "model.name": None})
    assert config.cache == CacheConfig(max_capacity=4096, chunk=32)
    assert config.summary.every_seconds == 5.0  # a TOML integer where a float is expected
    assert config.model.name == "default"  # None from the CLI means "not given"


def test_environment_lists_booleans_and_unset(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[outputs]\njsonl = "/tmp/x.jsonl"\n',
        STREAMD_SOURCES_ZMQ_SUB="tcp://10.0.0.1:6000, ipc:///run/a.sock",
        STREAMD_SOURCES_ZMQ_PULL="",
        STREAMD_OUTPUTS_STDOUT="off",
        STREAMD_OUTPUTS_JSONL="",
    )
    assert config.sources.zmq_sub == ("tcp://10.0.0.1:6000", "ipc:///run/a.sock")
    assert config.sources.zmq_pull == ()
    assert config.outputs.stdout is False
    assert config.outputs.jsonl is None


def test_every_key_has_a_distinct_environment_variable() -> None:
    names = [env_var_for(key) for key in config_keys()]
    assert len(set(names)) == len(names)
    assert env_var_for("cache.max_capacity") == "STREAMD_CACHE_MAX_CAPACITY"
    assert env_var_for("sources.mqtt.host") == "STREAMD_SOURCES_MQTT_HOST"
    assert env_var_for("control.socket") == "STREAMD_CONTROL_SOCKET"


def test_unknown_environment_lists_typos() -> None:
    env = {"STREAMD_CACHE_MAXCAPACITY": "1", "STREAMD_CACHE_CHUNK": "4", "STREAMD_CONFIG": "/x"}
    assert unknown_environment(env) == ["STREAMD_CACHE_MAXCAPACITY"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"STREAMD_CACHE_MAX_CAPACITY": "-3"},
            "cache.max_capacity = -3: must be an integer from 8 to 1048576 "
            "(from STREAMD_CACHE_MAX_CAPACITY)",
        ),
        ({"STREAMD_CACHE_CHUNK": "lots"}, "cache.chunk = 'lots': must be an integer from 1"),
        (
            {"STREAMD_CACHE_REFRESH": "0"},
            "cache.refresh = '0': must be 'auto', 'off' or a number of stream tokens, like 128",
        ),
        (
            {"STREAMD_MODEL_DTYPE": "fp8"},
            "model.dtype = 'fp8': must be one of: auto, int4, float32",
        ),
        ({"STREAMD_MODEL_DEVICE": "gpu"}, "must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"STREAMD_SUMMARY_EVERY_SECONDS": "inf"}, "must be a number >= 0; 0 turns it off"),
        ({"STREAMD_OUTPUTS_STDOUT": "maybe"}, "outputs.stdout = 'maybe': must be true or false"),
        ({"STREAMD_METRICS_PORT": "70000"}, "metrics.port = 70000: must be an integer from 0"),
        ({"STREAMD_SOURCES_ZMQ_PULL": "5555"}, "must be ZeroMQ endpoints: tcp://HOST:PORT"),
        (
            {
                "STREAMD_SOURCES_ZMQ_PULL": "tcp://127.0.0.1:5555",
                "STREAMD_OUTPUTS_ZMQ_PUB": "tcp://127.0.0.1:5555",
            },
            "outputs.zmq_pub = 'tcp://127.0.0.1:5555': tcp://127.0.0.1:5555 is also bound by "
            "sources.zmq_pull (tcp://127.0.0.1:5555); one address takes one socket",
        ),
        (
            {
                "STREAMD_SOURCES_ZMQ_PULL": "tcp://127.0.0.1:5555",
                "STREAMD_OUTPUTS_ZMQ_PUB": "tcp://0.0.0.0:5555",
                "STREAMD_SECURITY_ALLOW_INSECURE": "true",
            },
            "is also bound by sources.zmq_pull (tcp://127.0.0.1:5555)",
        ),
        ({"STREAMD_SOURCES_MQTT_TOPICS": "logs/#"}, "needs sources.mqtt.host"),
        ({"STREAMD_OUTPUTS_MQTT_TOPIC": "a/+/b"}, "must be a topic without + or #"),
        ({"STREAMD_OUTPUTS_MQTT_TOPIC": "s"}, "outputs.mqtt_topic = 's': needs sources.mqtt.host"),
        (
            {
                "STREAMD_SOURCES_MQTT_HOST": "127.0.0.1",
                "STREAMD_SOURCES_MQTT_TOPICS": "plant/+,logs/#",
                "STREAMD_OUTPUTS_MQTT_TOPIC": "logs/streamd/summary",
            },
            "outputs.mqtt_topic = 'logs/streamd/summary': sources.mqtt.topics subscribes to "
            "'logs/#', which takes this topic in: the daemon would read its own summaries back",
        ),
        (
            {"STREAMD_METRICS_HOST": "0.0.0.0"},
            "metrics.host = '0.0.0.0': serves /metrics beyond loopback without authentication",
        ),
        ({"STREAMD_CONTROL_SOCKET": "rel.sock"}, "must be an absolute path"),
        ({"STREAMD_CONTROL_SOCKET": "/" + "x" * 120}, "at most 107 bytes long"),
        ({"STREAMD_SOURCES_MQTT_TLS_KEY": "/c.key"}, "needs sources.mqtt.tls_cert"),
    ],
)
def test_bad_values_are_refused_in_words(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **env)
    assert message in str(caught.value)


def test_toml_type_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cache.max_capacity = True: must be an integer") as e:
        load(tmp_path, "[cache]\nmax_capacity = true\n")
    assert str(tmp_path / "streamd.toml") in str(e.value)


def test_unknown_key_names_it_and_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "[cache]\nmax_capacty = 10\n")
    text = str(caught.value)
    assert "unknown key 'cache.max_capacty'" in text
    assert "did you mean 'cache.max_capacity'?" in text
    assert "known keys in [cache]: chunk, max_capacity, refresh, system_prompt" in text


def test_unknown_section_and_scalar_section(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*known keys in the top level"):
        load(tmp_path, "[modle]\nname = 'x'\n")
    with pytest.raises(ConfigError, match=r"cache in .* must be a table"):
        load(tmp_path, "cache = 3\n")


def test_missing_explicit_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ=BASE_ENV)
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(tmp_path, "[cache\n")


def test_unknown_override_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'cache\.size'"):
        load_config(EXAMPLE, environ=BASE_ENV, overrides={"cache.size": 3})


def test_password_never_shows(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[sources.mqtt]\nhost = "b"\ntopics = ["t"]\nusername = "u"\n',
        STREAMD_SOURCES_MQTT_PASSWORD="hunter2",
    )
    assert config.sources.mqtt.password == "hunter2"
    assert config.sources.mqtt.enabled
    assert "hunter2" not in repr(config)
    assert config.as_dict()["sources"]["mqtt"]["password"] == "***"
    assert config.as_dict(redact=False)["sources"]["mqtt"]["password"] == "hunter2"
    with pytest.raises(ConfigError) as caught:
        MqttConfig(password="hunter2")
    assert "hunter2" not in str(caught.value)
    assert "sources.mqtt.password = ***: needs sources.mqtt.username" in str(caught.value)


def test_sections_built_in_code_obey_the_same_rules() -> None:
    with pytest.raises(ConfigError, match=r"cache\.max_capacity = 4: must be an integer from 8"):
        CacheConfig(max_capacity=4)
    with pytest.raises(ConfigError, match=r"cache\.chunk = '8': must be an integer"):
        CacheConfig(chunk=cast(int, "8"))  # a str where code promised an int


def test_with_overrides_rechecks_and_keeps_the_rest() -> None:
    config = load_config(EXAMPLE, environ=BASE_ENV)
    tuned = config.with_overrides({"cache.max_capacity": "512", "summary.every_tokens": 0})
    assert (tuned.cache.max_capacity, tuned.summary.every_tokens) == (512, 0)
    assert tuned.control == config.control
    with pytest.raises(ConfigError, match=r"cache.max_capacity = 2: .* \(from the request\)"):
        config.with_overrides({"cache.max_capacity": 2})


def test_the_daemon_will_not_subscribe_to_its_own_summaries() -> None:
    """`--mqtt-topic '#'` with a summary topic: it used to summarize its own summaries,
    forever. Refused before anything starts (exit 2), naming both settings."""
    done = cli(
        "run",
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-topic",
        "#",
        "--mqtt-summary-topic",
        "streamd/summaries",
    )
    assert done.returncode == 2, done.stderr
    assert "outputs.mqtt_topic = 'streamd/summaries': sources.mqtt.topics subscribes to '#'" in (
        done.stderr
    )


def test_metrics_beyond_loopback_need_allow_insecure(tmp_path: Path) -> None:
    """`--metrics-host 0.0.0.0` used to bind with neither a refusal nor a warning."""
    insecure = {"STREAMD_METRICS_HOST": "0.0.0.0", "STREAMD_SECURITY_ALLOW_INSECURE": "true"}
    assert load(tmp_path, **insecure).metrics.host == "0.0.0.0"
    assert load(tmp_path, STREAMD_METRICS_HOST="::1").metrics.host == "::1"
    assert load(tmp_path, STREAMD_METRICS_HOST="0.0.0.0", STREAMD_METRICS_PORT="0")  # off
    done = cli("run", "--metrics-host", "0.0.0.0", "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert "metrics.host = '0.0.0.0': serves /metrics beyond loopback" in done.stderr


def test_two_binds_on_one_address_are_refused_naming_both(tmp_path: Path) -> None:
    """A --zmq-pub on the --zmq-bind address used to fail at bind time blaming
    sources.zmq_pull alone; different ports or hosts still load."""
    ok = {
        "STREAMD_SOURCES_ZMQ_PULL": "tcp://127.0.0.1:5555,ipc:///tmp/a.sock",
        "STREAMD_OUTPUTS_ZMQ_PUB": "tcp://127.0.0.1:5556",
    }
    assert load(tmp_path, **ok).outputs.zmq_pub == "tcp://127.0.0.1:5556"
    done = cli("run", "--zmq-bind", "tcp://127.0.0.1:5555", "--zmq-pub", "tcp://127.0.0.1:5555")
    assert done.returncode == 2, done.stderr
    assert "outputs.zmq_pub = 'tcp://127.0.0.1:5555'" in done.stderr
    assert "is also bound by sources.zmq_pull" in done.stderr


def test_a_jsonl_output_in_a_missing_folder_is_a_bad_setting(tmp_path: Path) -> None:
    """It failed when the output opened, exit 1; now with the other settings, exit 2."""
    missing = tmp_path / "no-such-folder" / "summaries.jsonl"
    done = cli("run", "--jsonl", str(missing), "--device", "cpu")
    assert done.returncode == 2, done.stderr
    assert f"outputs.jsonl = '{missing}': the folder {missing.parent} does not exist" in (
        done.stderr
    )
    assert load(tmp_path, STREAMD_OUTPUTS_JSONL=str(tmp_path / "s.jsonl")).outputs.jsonl
