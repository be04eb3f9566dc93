"""Snapshots and resume end to end: `streamd run` as a real process (tiny model, CPU), text in
over real ZeroMQ, SIGKILL and SIGTERM, and a restart on the same state directory."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.engine.prompts import DEFAULT_SYSTEM_PROMPT
from streamd.daemon.snapshot import SessionState, Snapshot, save, text_digest, window_digest
from streamd.daemon.tools.testing import free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, daemon_args, sample_log_lines

pytestmark = pytest.mark.network


def snapshot_file(daemon: Daemon) -> dict[str, Any] | None:
    path = daemon.state_dir / "snapshot.json"
    return json.loads(path.read_text()) if path.exists() else None  # replaced atomically


def send_and_wait(daemon: Daemon, pull: str, lines: int) -> dict[str, Any]:
    """Send `lines` log lines and wait until all of them are ingested.

    Waits on received, not on ingested alone: after a SIGKILL the restarted daemon
    replays what the spool had not trimmed yet (trimmed about once a second without
    snapshots), and those lines are ingested too, possibly after `before` was read."""
    before = daemon.status()
    assert before is not None
    done = cli("send", "--push", "--connect", pull, stdin=sample_log_lines(lines))
    assert done.returncode == 0, done.stderr
    target = before["sources"]["zmq-pull"]["received"] + lines
    return daemon.wait_status(lambda s: all_taken_in(s, target), f"{lines} lines ingested")


def all_taken_in(status: dict[str, Any], received: int) -> bool:
    """`received` lines came in on zmq-pull, and every line received or replayed from
    the spool is accounted for (ingested, dropped or rejected) with the queue empty."""
    source, spool = status["sources"]["zmq-pull"], status["spool"]
    replayed = spool["replayed_by_source"].get("zmq-pull", 0) if spool else 0
    accounted = source["ingested"] + source["dropped"] + source["rejected"]
    return (
        source["received"] == received
        and source["received"] + replayed == accounted
        and not (spool and spool["replaying"])
        and status["queue"]["depth"] == 0
    )


def assert_resumed(daemon: Daemon, saved: dict[str, Any], before: dict[str, Any]) -> None:
    """The restarted daemon holds the snapshot's window and goes on from its counters."""
    status = daemon.wait_ready()
    snap, ids = status["snapshot"], saved["session"]["window_ids"]
    # The digest the restarted session computes from the ids it re-prefilled.
    assert snap["window_digest"] == window_digest(ids) == saved["session"]["window_sha256"]
    assert snap["window_tokens"] == len(ids) == status["cache"]["used"] - status["cache"]["pinned"]
    assert snap["resumed"]["window_tokens"] == len(ids) and snap["problem"] is None
    assert status["tokens"]["ingested"] == before["tokens"]["ingested"]
    assert status["tokens"]["evicted"] == before["tokens"]["evicted"]
    assert status["summaries"]["emitted"] == before["summaries"]["emitted"]
    assert '"resumed"' in daemon.log()
    table = daemon.ctl("status").stdout
    assert f"resumed {len(ids)} window tokens at start" in table


def test_sigkill_then_restart_resumes_the_window_of_the_last_snapshot(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    pull = free_zmq_endpoint()
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--snapshot-every-seconds", "0.5")
    first = Daemon(tmp_path, args)
    first.start()
    try:
        first.wait_ready()
        send_and_wait(first, pull, 30)  # more than the window of 256 - pinned tokens
        record = first.summarize()

        def snapshot_caught_up() -> tuple[dict[str, Any], dict[str, Any]] | None:
            status, saved = first.status(), snapshot_file(first)
            if status is None or saved is None:
                return None
            caught_up = saved["summaries_emitted"] == record["seq"] and (
                saved["session"]["tokens_ingested"] == status["tokens"]["ingested"]
            )
            # A snapshot is written every 0.5 s: one may land between the two reads.
            same = status["snapshot"]["window_digest"] == window_digest(
                saved["session"]["window_ids"]
            )
            return (status, saved) if caught_up and same else None

        before, saved = wait_until(snapshot_caught_up, "a snapshot of the whole stream")
        # The window the daemon reports is the one in the file, and is what its cache uses.
        ids = saved["session"]["window_ids"]
        assert before["tokens"]["evicted"] > 0  # the window has slid: older text is gone
        assert len(ids) == before["cache"]["used"] - before["cache"]["pinned"]
        assert saved["last_summary"] == record
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        assert first.process.wait(30) == -signal.SIGKILL
    finally:
        first.stop()
    lines_before = first.jsonl.read_text()

    second = Daemon(tmp_path, args)  # the same state directory, JSONL file and port
    second.start()
    try:
        assert_resumed(second, saved, before)
        after = send_and_wait(second, pull, 5)
        assert after["tokens"]["ingested"] > before["tokens"]["ingested"]
        next_record = second.summarize()
    finally:
        assert second.stop() == 0, second.log()
    assert next_record["seq"] == record["seq"] + 1  # the numbering goes on
    assert next_record["stream_tokens"] == after["tokens"]["ingested"]
    assert next_record["window_last"] > record["window_last"]
    # Nothing written before the kill is lost or rewritten: the file only grew.
    assert second.jsonl.read_text().startswith(lines_before)
    assert [r["seq"] for r in second.summaries()] == [1, 2]  # no text after the last one


def test_a_graceful_stop_writes_the_snapshot_the_next_start_resumes(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    pull = free_zmq_endpoint()
    # No timer: the only snapshot is the one taken at shutdown.
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--snapshot-every-seconds", "0")
    first = Daemon(tmp_path, args)
    first.start()
    try:
        first.wait_ready()
        before = send_and_wait(first, pull, 12)
        assert snapshot_file(first) is None
    finally:
        assert first.stop() == 0, first.log()
    saved = snapshot_file(first)
    assert saved is not None
    assert saved["session"]["tokens_ingested"] == before["tokens"]["ingested"]
    final = first.summaries()[-1]
    assert final["trigger"] == "shutdown" and saved["last_summary"] == final
    before["summaries"]["emitted"] = final["seq"]  # the shutdown summary came after `before`

    second = Daemon(tmp_path, args)
    second.start()
    try:
        assert_resumed(second, saved, before)
    finally:
        assert second.stop() == 0, second.log()
    assert second.summaries() == [final]  # no new text: no second shutdown summary


def _garbage(path: Path, model_dir: Path) -> None:
    path.write_bytes(b'{"format": "streamd-session-snapshot", "version": 1, "sess')


def _other_capacity(path: Path, model_dir: Path) -> None:
    """A valid snapshot taken at max_capacity 512: this daemon runs 256."""
    prompt = text_digest(DEFAULT_SYSTEM_PROMPT)
    state = SessionState(
        model=str(model_dir),
        max_capacity=512,
        chunk=64,
        pinned=53,
        system_prompt_sha256=prompt,
        position=53 + 400,
        tokens_ingested=400,
        summaries=0,
        window_ids=tuple([28] * 400),
    )
    save(path, Snapshot(state, 0, None, {}, 1.7e9))


@pytest.mark.parametrize(
    ("write", "kind", "reason"),
    [
        (_garbage, "corrupt", "not JSON"),
        (_other_capacity, "incompatible", "taken at max_capacity 512, this daemon has 256"),
    ],
)
def test_an_unusable_snapshot_is_set_aside_and_the_daemon_starts_fresh(
    tmp_path: Path,
    tiny_model_dir: Path,
    write: Callable[[Path, Path], None],
    kind: str,
    reason: str,
) -> None:
    daemon = Daemon(tmp_path, daemon_args(tiny_model_dir, "--zmq-bind", free_zmq_endpoint()))
    path = daemon.state_dir / "snapshot.json"
    daemon.state_dir.mkdir()
    write(path, tiny_model_dir)
    content = path.read_bytes()
    daemon.start()
    try:
        status = daemon.wait_ready()
    finally:
        assert daemon.stop() == 0, daemon.log()
    snap = status["snapshot"]
    assert snap["resumed"] is None and snap["problem"].startswith(f"{kind}: ")
    assert reason in snap["problem"]
    assert status["tokens"]["ingested"] == 0  # fresh
    moved = list(daemon.state_dir.glob(f"snapshot.json.{kind}-*"))
    assert [p.read_bytes() for p in moved] == [content]  # kept for a person to look at
    assert not path.exists()  # a fresh daemon that read nothing writes no snapshot
    log = daemon.log()
    assert "snapshot not used; starting fresh" in log and reason in log


def test_summary_numbers_go_on_from_the_jsonl_after_a_sigkill_without_snapshot(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Summaries written after the last snapshot (here: none at all) keep their numbers:
    the restarted daemon numbers on from the file's last record, not from 1."""
    pull = free_zmq_endpoint()
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--no-snapshot")
    first = Daemon(tmp_path, args)
    first.start()
    try:
        first.wait_ready()
        send_and_wait(first, pull, 3)
        assert first.summarize()["seq"] == 1
        send_and_wait(first, pull, 3)
        assert first.summarize()["seq"] == 2
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        assert first.process.wait(30) == -signal.SIGKILL
    finally:
        first.stop()
    second = Daemon(tmp_path, args)
    second.start()
    try:
        second.wait_ready()
        send_and_wait(second, pull, 3)
        assert second.summarize()["seq"] == 3
    finally:
        assert second.stop() == 0, second.log()
    assert [r["seq"] for r in second.summaries()] == [1, 2, 3]  # no text after the third
