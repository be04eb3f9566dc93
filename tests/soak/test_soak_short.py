"""The short soak CI runs: `streamd soak` as a real subprocess, with its own Mosquitto and
its own daemon (tiny model, CPU), two broker restarts and one daemon SIGKILL.

About a minute: two model loads, 40 s of traffic, and the settling before the kill and
at the end. The rate is low because CI has two cores that the daemon, the soak's
senders and the broker share; the daemon must keep up, or settling only takes longer.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from streamd.daemon.tools.testing import CLI, clean_env
from tests.daemon.daemon_testing import log_events, read_jsonl

pytestmark = pytest.mark.network

SOAK_TIMEOUT_S = 420  # generous: a loaded machine settles slowly; a stuck soak must still end


def run_soak(model_dir: Path, workdir: Path, out: Path) -> subprocess.CompletedProcess[str]:
    args = [
        "soak", "--duration", "40", "--senders", "2", "--rate", "2", "--blobs", "1",
        "--broker-restarts", "2", "--kill-daemon-once", "--model", str(model_dir),
        "--device", "cpu", "--max-capacity", "512", "--summary-every-tokens", "2048",
        "--warmup", "5", "--workdir", str(workdir), "--json", str(out),
        "--daemon-arg=--summary-max-tokens=8",
    ]  # fmt: skip
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=SOAK_TIMEOUT_S, env=clean_env()
    )


def test_a_short_soak_reconciles_exactly_and_memory_stays_flat(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    workdir, out = tmp_path / "soak", tmp_path / "soak.json"
    done = run_soak(tiny_model_dir, workdir, out)
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    assert "RECONCILED, memory flat" in done.stdout
    report = json.loads(out.read_text())
    assert report["ok"] and report["reconciled"] and report["memory_flat"]

    zmq, mqtt = report["sources"]["zmq-pull"], report["sources"]["mqtt"]
    # Both transports carried good and malformed traffic, and a blob each.
    for source in (zmq, mqtt):
        assert source["sent_by_kind"]["good"] > 0 and source["sent_by_kind"]["blob"] == 1
        assert source["queued"] == 0
        balance = source["ingested"] + source["dropped"] + source["rejected"]
        assert source["received"] == balance
    # PULL is exact: every message sent was received, less the blob libzmq refused.
    assert zmq["received"] == zmq["sent"] - 1 and zmq["duplicates"] == 0
    broken = zmq["sent_by_kind"].get("broken_json", 0)
    assert zmq["rejected_by_reason"].get("bad_json_envelope", 0) == broken
    assert "too_large" not in zmq["rejected_by_reason"]
    # MQTT QoS 1 is at least once; its blob reached the decoder and was refused there.
    assert mqtt["received"] >= mqtt["sent"]
    assert mqtt["rejected_by_reason"]["too_large"] >= 1

    # The faults happened: the broker's and the daemon's own logs say so.
    assert report["restarts"]["broker"] == 2 and report["restarts"]["daemon_sigkill"] == 1
    broker_logs = (workdir / "broker").glob("mosquitto-*.log")  # named by port
    assert sum(log.read_text().count(" running") for log in broker_logs) == 3
    events = log_events(workdir / "daemon.log")
    assert [e["event"] for e in events].count("ready") == 2
    stopped = [e for e in events if e["event"] == "stopped"]
    assert len(stopped) == 1 and stopped[0]["exit_code"] == 0  # the SIGKILLed run says nothing

    # Every summary the daemon runs emitted is in the JSONL, which holds whole records.
    summaries = report["summaries"]
    lines = (workdir / "summaries.jsonl").read_text().splitlines()
    assert len(lines) == len(read_jsonl(workdir / "summaries.jsonl")) == summaries["jsonl_lines"]
    assert summaries["jsonl_lines"] == summaries["emitted"] + summaries["at_shutdown"] > 0

    memory = report["memory"]
    assert len(memory["rss"]) == 2  # one trend per daemon run
    for run in memory["rss"]:
        assert run["ratio"] is not None and run["ratio"] <= memory["bound"]
    assert memory["gpu"] is None  # CPU: status reports no GPU
