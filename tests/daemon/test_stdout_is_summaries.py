"""`streamd run | jq .text`: stdout carries the summary records and nothing else; the log
events go to stderr (they used to share stdout, so jq choked on the first event)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from streamd.daemon.tools.testing import CLI, clean_env, free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import cli, daemon_args


def test_stdout_holds_only_summary_records_and_stderr_the_events(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    control, endpoint = tmp_path / "control.sock", free_zmq_endpoint()
    config = tmp_path / "streamd.toml"
    config.write_text("")
    args = [
        *CLI, "run", "--config", str(config), "--control-socket", str(control),
        "--state-dir", str(tmp_path / "state"), "--zmq-bind", endpoint,
        *daemon_args(tiny_model_dir),
    ]  # fmt: skip
    out, err = (tmp_path / "stdout").open("w"), (tmp_path / "stderr").open("w")
    daemon = subprocess.Popen(args, stdout=out, stderr=err, env=clean_env())
    try:
        at = ("--control-socket", str(control))

        def ready() -> bool:
            done = cli("status", "--json", *at)
            return bool(done.stdout.strip()) and json.loads(done.stdout)["state"] == "ready"

        wait_until(ready, "the daemon to be ready")
        sent = cli("send", "--push", "--connect", endpoint, stdin=b"disk /dev/sda1 is 91% full\n")
        assert sent.returncode == 0, sent.stderr
        wait_until(lambda: '"ingested": 1' in cli("status", "--json", *at).stdout, "ingest")
        assert cli("summarize", "--json", *at).returncode == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=120)
        out.close()
        err.close()
    records = [json.loads(line) for line in (tmp_path / "stdout").read_text().splitlines()]
    assert records and all({"seq", "text", "stream_tokens"} <= set(r) for r in records)
    events = [json.loads(line) for line in (tmp_path / "stderr").read_text().splitlines()]
    assert {"starting", "ready", "stopped"} <= {event["event"] for event in events}
