"""#11 observation 5: a stdout reader that stops reading (a full pipe) blocked the whole
daemon: `status` and the metrics dead, SIGTERMs ignored. Through a real daemon whose stdout
is a pipe nobody reads (shrunk to one page, so a few summaries fill it): summaries go on,
the records stdout cannot take are dropped and counted, status and /metrics answer, and
SIGTERM ends it."""

from __future__ import annotations

import fcntl
import signal
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamd.daemon.control.client import ControlClient
from streamd.daemon.tools.testing import (
    CLI,
    DAEMON_STOP_S,
    clean_env,
    free_tcp_port,
    free_zmq_endpoint,
    wait_until,
)
from tests.daemon.daemon_testing import daemon_args, log_events

pytestmark = pytest.mark.network

PIPE_BYTES = 4096  # the least a pipe holds: a page, two or three summary records
SUMMARIES = 30  # enough to fill the pipe and then the stdout output's queue
REQUEST_S = 60.0  # a summary of the tiny model takes well under a second


def test_a_stdout_nobody_reads_stalls_nothing_but_stdout(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    control, endpoint, port = tmp_path / "control.sock", free_zmq_endpoint(), free_tcp_port()
    config = tmp_path / "streamd.toml"
    config.write_text("")
    args = [
        *CLI, "run", "--config", str(config), "--control-socket", str(control),
        "--state-dir", str(tmp_path / "state"), "--jsonl", str(tmp_path / "summaries.jsonl"),
        *daemon_args(tiny_model_dir, "--zmq-bind", endpoint), "--metrics-port", str(port),
    ]  # fmt: skip
    stderr = (tmp_path / "stderr").open("w")
    daemon = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=clean_env())
    assert daemon.stdout is not None
    fcntl.fcntl(daemon.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    try:
        with ControlClient(control, REQUEST_S) as client:

            def status() -> dict[str, Any] | None:
                assert daemon.poll() is None, (tmp_path / "stderr").read_text()[-3000:]
                try:
                    return client.request("status")
                except Exception:
                    return None

            wait_until(lambda: (s := status()) and s["state"] == "ready", "the daemon to be ready")
            send_one_line(endpoint)
            wait_until(lambda: (s := status()) and s["sources"]["zmq-pull"]["ingested"], "ingest")
            for _ in range(SUMMARIES):
                client.request("summarize")
            doc = client.request("status")
        stdout = doc["output_queues"]["stdout"]
        assert stdout["dropped"] > 0 and stdout["queued"] > 0, doc["output_queues"]
        assert doc["output_queues"]["jsonl"] == {"written": SUMMARIES, "queued": 0, "dropped": 0}
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=REQUEST_S)
        text = metrics.read().decode()
        assert 'streamd_output_dropped_total{output="stdout",reason="queue_full"}' in text
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(DAEMON_STOP_S)
        finally:
            daemon.kill()  # only if it ignored SIGTERM (then the test fails)
            daemon.wait()
            daemon.stdout.close()
            stderr.close()
    assert code == 0, (tmp_path / "stderr").read_text()[-3000:]
    stopped = [e for e in log_events(tmp_path / "stderr") if e.get("event") == "stopped"]
    assert stopped, "no 'stopped' event"


def send_one_line(endpoint: str) -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.connect(endpoint)
    push.send(b"disk /dev/sda1 is 91% full")
    push.close(linger=5000)
    context.term()
