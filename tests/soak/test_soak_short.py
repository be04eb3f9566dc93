"""The short soak CI runs: `streamd soak` as a real subprocess, with its own Mosquitto and
its own daemon (tiny model, CPU), two broker restarts, one daemon SIGTERM and one SIGKILL
mid-flood (acked ZeroMQ senders and QoS 1 publishers going on through them).

About a minute and a half: three model loads, 45 s of traffic, and the settling at the
end. The rate is low because CI has two cores that the daemon, the soak's senders and
the broker share. The liveness bounds are loose here (a loaded CI box stalls any
process now and then); `streamd soak` with its defaults judges the real ones.
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
        "soak", "--duration", "45", "--senders", "2", "--rate", "2", "--blobs", "1",
        "--broker-restarts", "2", "--sigterms", "1", "--sigkills", "1", "--model",
        str(model_dir), "--device", "cpu", "--max-capacity", "512",
        "--summary-every-tokens", "2048", "--warmup", "5", "--watchdog-sec", "5",
        "--status-p99", "10", "--workdir", str(workdir), "--json", str(out),
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

    zmq, mqtt = report["sources"]["zmq-acked"], report["sources"]["mqtt"]
    for source in (zmq, mqtt):
        assert source["sent_by_kind"]["good"] > 0 and source["queued"] == 0
        assert not source["counts_of_every_run"]  # the SIGKILLed run's counters died with it
    # Acked ZeroMQ: each message sent (acknowledged) spooled exactly once over the three
    # runs, resends across the SIGTERM and the SIGKILL dropped as duplicates.
    assert zmq["spooled"] == zmq["sent"] == zmq["must_spool"]
    assert mqtt["sent_by_kind"]["blob"] == 1  # refused as too large: never spooled
    assert (
        mqtt["spooled"]
        >= mqtt["must_spool"]
        == mqtt["sent"] - mqtt["sent_by_kind"].get("broken_json", 0) - 1
    )

    # The faults happened: the broker's and the daemon's own logs say so.
    restarts = report["restarts"]
    assert (restarts["broker"], restarts["daemon_sigterm"], restarts["daemon_sigkill"]) == (2, 1, 1)
    broker_logs = (workdir / "broker").glob("mosquitto-*.log")  # named by port
    assert sum(log.read_text().count(" running") for log in broker_logs) == 3
    events = log_events(workdir / "daemon.log")
    assert [e["event"] for e in events].count("ready") == 3
    stopped = [e for e in events if e["event"] == "stopped"]
    assert [e["exit_code"] for e in stopped] == [0, 0]  # the SIGKILLed run says nothing
    names = [c["name"] for c in report["checks"] if c["ok"]]
    assert "spool: every message spooled was taken in before the last stop" in names

    # The last run's summaries are all in the JSONL, which holds whole records.
    summaries = report["summaries"]
    lines = (workdir / "summaries.jsonl").read_text().splitlines()
    assert len(lines) == len(read_jsonl(workdir / "summaries.jsonl")) == summaries["jsonl_lines"]
    assert summaries["last_run_lines"] == summaries["emitted"] + summaries["at_shutdown"] > 0

    live = report["liveness"]
    assert len(live["watchdog_max_gap_ms_by_run"]) == 3  # every run pinged the watchdog
    assert live["status_asked"] > 0 and live["status_unanswered"] == 0

    memory = report["memory"]
    assert len(memory["rss"]) == 3  # one trend per daemon run
    assert memory["gpu"] is None  # CPU: status reports no GPU
