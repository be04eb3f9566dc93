"""Log output as journald, a pipe and a terminal see it: real files, a real pty, a real process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from streamd.daemon.logsetup import configure_logging, remove_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    remove_logging()
    logging.getLogger().setLevel(level)


@pytest.fixture
def log_file(tmp_path: Path, restore_logging: None) -> Iterator[TextIO]:
    with (tmp_path / "out.log").open("w+") as file:
        yield file


def journal_stream_of(file: TextIO) -> str:
    stat = os.fstat(file.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


def lines(file: TextIO) -> list[str]:
    file.flush()
    file.seek(0)
    return file.read().splitlines()


def records(file: TextIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(file)]


def test_json_lines_for_ours_and_the_libraries(
    log_file: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    configure_logging("info", stream=log_file)
    structlog.get_logger("streamd.test").info("chunk prefilled", tokens=256)
    logging.getLogger("paho").warning("reconnecting in %d s", 2, extra={"broker": "b:1883"})
    logging.getLogger("paho").debug("below the level")
    ours, paho = records(log_file)
    assert ours["event"] == "chunk prefilled" and ours["tokens"] == 256
    assert (ours["level"], ours["logger"]) == ("info", "streamd.test")
    assert ours["timestamp"].endswith("Z")
    assert paho["event"] == "reconnecting in 2 s" and paho["broker"] == "b:1883"
    assert paho["level"] == "warning"


def test_syslog_prefix_when_journald_reads_stdout(
    log_file: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(log_file))
    configure_logging("debug", stream=log_file)
    log = structlog.get_logger()
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    logging.getLogger("asyncio").error("loop")
    assert [line[:3] for line in lines(log_file)] == ["<7>", "<6>", "<4>", "<3>", "<3>"]
    assert json.loads(lines(log_file)[1][3:])["event"] == "i"


def test_no_prefix_when_journal_stream_is_another_file(
    log_file: TextIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "other").open("w") as other:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream_of(other))
    configure_logging(stream=log_file)
    structlog.get_logger().info("plain")
    assert lines(log_file)[0].startswith("{")


def test_secrets_are_redacted_at_any_depth(log_file: TextIO) -> None:
    configure_logging(stream=log_file)
    config = {"sources": {"mqtt": {"password": "hunter2", "host": "b"}}}
    structlog.get_logger().info("config", config=config, mqtt_password="hunter2", token_count=3)
    logging.getLogger("aiomqtt").info("connect", extra={"password": "hunter2"})
    text = "\n".join(lines(log_file))
    assert "hunter2" not in text
    first = records(log_file)[0]
    assert first["config"]["sources"]["mqtt"] == {"password": "***", "host": "b"}
    assert first["token_count"] == 3  # "token" counts are not secrets


def test_exceptions_carry_the_traceback(log_file: TextIO) -> None:
    configure_logging(stream=log_file)
    try:
        raise RuntimeError("CUDA out of memory")
    except RuntimeError:
        structlog.get_logger().exception("chunk failed", chunk=7)
    record = records(log_file)[0]
    assert record["level"] == "error"
    assert "RuntimeError: CUDA out of memory" in record["exception"]


def test_console_renderer_on_a_terminal(restore_logging: None) -> None:
    controller, terminal = os.openpty()
    with open(terminal, "w") as tty:
        configure_logging(stream=tty)
        structlog.get_logger().info("hello operator", capacity=1024)
        tty.flush()
        out = os.read(controller, 4096).decode()
    os.close(controller)
    assert "hello operator" in out
    assert "capacity" in out
    assert not out.lstrip().startswith("{")


def test_reconfiguring_replaces_the_handler(log_file: TextIO, tmp_path: Path) -> None:
    configure_logging(stream=log_file)
    configure_logging(fmt="json", stream=log_file)
    structlog.get_logger().info("once")
    assert len(lines(log_file)) == 1


CHILD = """
import logging, structlog
from streamd.daemon.logsetup import configure_logging
configure_logging()
import transformers
from streamd.daemon.logsetup import route_transformers_logging
route_transformers_logging()
transformers.utils.logging.get_logger("transformers.modeling_utils").warning("from hf")
structlog.get_logger("streamd").info("ready")
"""


def test_a_real_process_under_journald(tmp_path: Path) -> None:
    """stderr is a file journald 'reads': lines get <N>, transformers' among them; stdout,
    the summaries' stream, gets no log line."""
    err_path = tmp_path / "stderr"
    with err_path.open("w") as err:
        env = os.environ | {"JOURNAL_STREAM": journal_stream_of(err)}
        done = subprocess.run(
            [sys.executable, "-c", CHILD],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            timeout=60,
            check=True,
        )
    assert done.stdout == b""
    hf, ours = err_path.read_text().splitlines()
    assert hf.startswith("<4>") and json.loads(hf[3:])["event"] == "from hf"
    assert ours.startswith("<6>") and json.loads(ours[3:])["logger"] == "streamd"


def test_loading_a_model_off_a_terminal_turns_the_library_progress_bars_off(
    tiny_model_dir: Path,
) -> None:
    """#11 observation 16: the GGUF's conversion bar went to the journal. Off a terminal
    (pytest's captured stderr, as under systemd) loading a model turns transformers' tqdm
    bars off; on a terminal they stay."""
    from transformers.utils import logging as hf_logging

    from streamd.daemon.engine.loading import load_model

    assert not sys.stderr.isatty()
    hf_logging.enable_progress_bar()
    try:
        load_model(str(tiny_model_dir), device="cpu", dtype="float32")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
