"""The per-source backpressure policies and the queue bound, as configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamd.daemon.config import Config, ConfigError, SourcesConfig
from streamd.daemon.service import Service
from streamd.daemon.wiring import build_sources
from tests.daemon.daemon_testing import load


def policies(config: Config) -> dict[str, bool]:
    """{config key: waits when full} of every source the config makes."""
    return {spec.key: spec.wait_when_full for spec in build_sources(config)}


def test_defaults_pull_blocks_and_sub_and_mqtt_drop_the_oldest(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'sources.zmq_sub = ["tcp://127.0.0.1:5556"]\n'
        '[sources.mqtt]\nhost = "127.0.0.1"\ntopics = ["logs/#"]\n',
    )
    assert (config.sources.zmq_pull_backpressure, config.sources.zmq_sub_backpressure) == (
        "block", "drop-oldest",
    )  # fmt: skip
    assert config.sources.mqtt.backpressure == "drop-oldest"
    assert policies(config) == {
        "sources.zmq_pull": True,
        "sources.zmq_acked": True,  # a sender waits for what is not acknowledged
        "sources.zmq_sub": False,
        "sources.mqtt": False,
    }


def test_pull_may_drop_the_oldest_instead(tmp_path: Path) -> None:
    config = load(tmp_path, "", STREAMD_SOURCES_ZMQ_PULL_BACKPRESSURE="drop-oldest")
    assert policies(config) == {"sources.zmq_pull": False, "sources.zmq_acked": True}


def test_an_unknown_policy_names_the_choices_and_where_it_came_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[sources]\nzmq_pull_backpressure = "drop-newest"\n')
    assert str(caught.value) == (
        "sources.zmq_pull_backpressure = 'drop-newest': must be one of: block, drop-oldest "
        f"(from {tmp_path / 'streamd.toml'})"
    )


@pytest.mark.parametrize(
    ("variable", "key", "why"),
    [
        (
            "STREAMD_SOURCES_ZMQ_SUB_BACKPRESSURE",
            "sources.zmq_sub_backpressure",
            "a SUB socket cannot hold its publishers back",
        ),
        (
            "STREAMD_SOURCES_MQTT_BACKPRESSURE",
            "sources.mqtt.backpressure",
            "the MQTT client keeps reading into an unbounded queue of its own",
        ),
    ],
)
def test_block_is_refused_where_it_cannot_work_and_says_why(
    tmp_path: Path, variable: str, key: str, why: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "", **{variable: "block"})
    message = str(caught.value)
    assert message.startswith(f"{key} = 'block': {why}")
    assert "use drop-oldest" in message and message.endswith(f"(from {variable})")


def test_a_section_built_in_code_obeys_the_same_rule() -> None:
    with pytest.raises(ConfigError, match=r"sources\.zmq_sub_backpressure = 'block'"):
        SourcesConfig(zmq_sub_backpressure="block")


def test_the_queue_bound_is_configured_and_checked(tmp_path: Path) -> None:
    config = load(tmp_path, "[ingest]\nqueue_max_chars = 4096\n")
    assert Service(config).queue.max_chars == 4096
    assert Service(load(tmp_path, "")).queue.max_chars == 8 * 1024 * 1024
    with pytest.raises(ConfigError, match=r"ingest\.queue_max_chars = 10: must be an integer >="):
        load(tmp_path, "[ingest]\nqueue_max_chars = 10\n")
