"""The daemon with the real default model (SmolLM2-135M-Instruct GGUF) on real log lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamd.daemon.tools.testing import free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, sample_log_lines

pytestmark = [pytest.mark.slow, pytest.mark.network]


def test_the_default_model_summarizes_real_logs_sent_to_the_daemon(tmp_path: Path) -> None:
    pull = free_zmq_endpoint()
    args = [
        "--model", "default", "--device", "cpu", "--max-capacity", "512", "--chunk", "128",
        "--summary-max-tokens", "48", "--summary-every-tokens", "256",
        "--summary-every-seconds", "0", "--metrics-port", "0", "--zmq-bind", pull,
    ]  # fmt: skip
    daemon = Daemon(tmp_path, args)
    daemon.start()
    try:
        # Loading the GGUF takes ~20 s: the control socket answers "starting" meanwhile.
        first = daemon.wait_status(lambda s: True, "the control socket", timeout_s=60)
        assert first["state"] == "starting"
        assert daemon.ctl("status").returncode == 3
        daemon.wait_ready(timeout_s=180)
        sent = cli("send", "--push", "--connect", pull, stdin=sample_log_lines(12))
        assert sent.returncode == 0, sent.stderr
        summaries = wait_until(daemon.summaries, "a summary in the JSONL file", timeout_s=120)
    finally:
        assert daemon.stop() == 0, daemon.log()
    summary = summaries[0]
    assert summary["trigger"] == "tokens" and summary["stream_tokens"] >= 256
    assert summary["model"].startswith("SmolLM2-135M-Instruct")
    assert len(summary["text"].split()) >= 3, summary["text"]
