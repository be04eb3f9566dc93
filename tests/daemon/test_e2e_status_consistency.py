"""`streamd status` must not contradict itself (#11, observation 14), against a real daemon
(`streamd run` as a process, tiny model, CPU): the tokens line beside the ingest chunk
latency while text streams, the last summary of a restarted daemon, and the snapshot's
age beside its interval. Each status document read is also rendered as the CLI's table
(the same function the CLI calls), so a line is checked against the document it came from.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.control.status import render_status_table
from streamd.daemon.tools.testing import free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, daemon_args, sample_log_lines, serving

pytestmark = pytest.mark.network

SNAPSHOT_EVERY_S = 10.0


def send(pull: str, payload: bytes) -> None:
    done = cli("send", "--push", "--connect", pull, stdin=payload)
    assert done.returncode == 0, done.stderr


def table_row(table: str, key: str) -> str:
    """The value of one row of the status table ('tokens  120 ingested ...' -> '120 ...')."""
    for line in table.splitlines():
        if line.startswith(f"{key} ") or line == key:
            return line[len(key) :].strip()
    raise AssertionError(f"no {key!r} row in:\n{table}")


def long_lines(count: int, chars: int = 400) -> bytes:
    """`count` messages of one long line each: hundreds of tokens, so one engine call
    prefills hundreds of one-token chunks, and status is read in the middle of calls."""
    words = " ".join(f"w{i % 97}" for i in range(chars // 4))[:chars]
    return "".join(f"{n} {words}\n" for n in range(count)).encode()


# --- 1. "0 ingested" beside "prefill (3 observed)" ------------------------------------------


def test_tokens_and_ingest_chunks_agree_while_text_streams(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """With --chunk 1 every prefill chunk is one token, so a fresh daemon's tokens ingested
    and its chunks observed must be the same number in every status document, also while
    a batch is half way through the engine: the latency was observed per chunk as each
    forward finished, but the token count only moved when the whole batch returned, so
    status said '0 ingested' beside 'prefill (300 observed)'."""
    pull = free_zmq_endpoint()
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--chunk", "1", "--no-snapshot")
    messages = 2
    with serving(Daemon(tmp_path, args)) as daemon:
        send(pull, long_lines(messages))
        seen: list[dict[str, Any]] = []

        def all_in() -> bool:
            doc = daemon.status()
            assert doc is not None
            seen.append(doc)
            return bool(doc["sources"]["zmq-pull"]["ingested"] == messages)

        wait_until(all_in, f"{messages} long messages ingested")
    streaming = [doc for doc in seen if doc["latency"]["prefill_chunk_s"]["count"] > 0]
    assert streaming, "no status was read while text streamed"
    for doc in seen:
        chunks = doc["latency"]["prefill_chunk_s"]
        assert doc["tokens"]["ingested"] == chunks["count"], (doc["tokens"], chunks)
        # Nor '120 ingested (0 tok/s, 1 min)': the rate counts chunks as they finish too.
        assert (doc["tokens"]["per_second_1m"] > 0) == (chunks["count"] > 0), doc["tokens"]
        # ... and the table says what each number counts: tokens, and chunks of them.
        table = render_status_table(doc)
        ingested = int(table_row(table, "tokens").split()[0])
        assert ingested == chunks["count"]
        assert f"({chunks['count']} chunks, {ingested} tokens" in table_row(table, "ingest chunk")


# --- 2. "summaries 3 emitted, last none yet" after a restart ----------------------------------


def test_a_restarted_daemon_shows_the_last_summary_from_before_the_restart(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Without a snapshot (off, or a SIGKILL before the first) the numbering goes on from
    the summary file, and so must the last summary's time: status said '2 emitted, last
    none yet'. It now says the last one came before the restart, and how long ago."""
    pull = free_zmq_endpoint()
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--no-snapshot")
    first = Daemon(tmp_path, args)
    with serving(first):
        for seq in (1, 2):
            send(pull, sample_log_lines(3))
            first.wait_status(
                lambda s, n=3 * seq: s["sources"]["zmq-pull"]["ingested"] == n, "lines in"
            )
            assert first.summarize()["seq"] == seq
    last = first.summaries()[-1]
    with serving(Daemon(tmp_path, args)) as second:
        doc = second.status()
        assert doc is not None
        summaries = doc["summaries"]
        assert summaries["emitted"] == 2
        assert summaries["last_age_s"] is not None, summaries
        written = datetime_of(last["time"])
        assert summaries["last_age_s"] == pytest.approx(time.time() - written, abs=5.0)
        row = table_row(render_status_table(doc), "summaries")
        assert "none yet" not in row and "before restart" in row, row
        assert "0 since start" in row, row


def datetime_of(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- 3. "snapshot last 3 min ago" beside a 60 s interval --------------------------------------


def snapshot_ok(doc: dict[str, Any]) -> str | None:
    """Why the snapshot row contradicts the interval, or None: a last snapshot older than
    the interval must say why (nothing new since, or due and waiting)."""
    snap = doc["snapshot"]
    age, every = snap["last_age_s"], snap["every_seconds"]
    row = table_row(render_status_table(doc), "snapshot")
    if age is None or age <= every or "nothing new since" in row or "due" in row:
        return None
    return f"{row!r} with a {every:g} s interval"


def test_the_snapshot_age_stays_within_its_interval_or_says_why(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The timer looked every interval and skipped an unchanged stream; text that came
    just after a skipped look waited a whole interval more, and status showed a snapshot
    older than its interval with nothing to say why. Now a moved stream is written once
    the interval since the last snapshot has passed, and a late one says it is due."""
    pull = free_zmq_endpoint()
    every = f"{SNAPSHOT_EVERY_S:g}"
    args = daemon_args(tiny_model_dir, "--zmq-bind", pull, "--snapshot-every-seconds", every)
    problems: list[str] = []

    def check(doc: dict[str, Any]) -> dict[str, Any]:
        if (problem := snapshot_ok(doc)) is not None:
            problems.append(problem)
        return doc

    with serving(Daemon(tmp_path, args)) as daemon:
        send(pull, sample_log_lines(3))
        daemon.wait_status(lambda s: check(s)["snapshot"]["written"] == 1, "the first snapshot")
        # Past the interval with nothing new: the timer has looked and skipped.
        daemon.wait_status(
            lambda s: check(s)["snapshot"]["last_age_s"] > SNAPSHOT_EVERY_S + 1.5,
            "the first snapshot older than the interval",
            timeout_s=SNAPSHOT_EVERY_S * 3,
        )
        ingested = daemon.status()["tokens"]["ingested"]  # type: ignore[index]
        send(pull, sample_log_lines(3))
        moved = daemon.wait_status(
            lambda s: check(s)["tokens"]["ingested"] > ingested, "the new lines ingested"
        )
        moved_at = time.time()
        assert snapshot_ok(moved) is None, snapshot_ok(moved)
        daemon.wait_status(
            lambda s: check(s)["snapshot"]["written"] == 2,
            "the second snapshot",
            timeout_s=SNAPSHOT_EVERY_S * 3,
        )
        saved = json.loads((daemon.state_dir / "snapshot.json").read_text())
    assert not problems, problems
    # Written about when the stream moved, not up to an interval later.
    assert saved["written_at"] - moved_at < SNAPSHOT_EVERY_S / 2


def test_a_due_snapshot_behind_a_long_batch_says_it_waits_for_the_engine(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """One long message at --chunk 2 keeps the engine in one ingest call for a while. The
    stream moves as each chunk is prefilled, so the snapshot is due, and its capture waits
    behind the call: status said 'last 6 s ago (nothing new since)' beside a 0.25 s interval
    while the tokens went up. It now says the snapshot is due and waits for the engine."""
    pull = free_zmq_endpoint()
    every = 0.25  # short: an ingest call must outlast it on a fast machine too
    args = daemon_args(
        tiny_model_dir, "--zmq-bind", pull, "--chunk", "2", "--snapshot-every-seconds", f"{every:g}"
    )

    def waiting(doc: dict[str, Any]) -> bool:
        engine, snap = doc["engine"], doc["snapshot"]
        return bool(
            engine["doing"] == "ingesting"
            and engine["for_s"] > every + 0.75
            and snap["last_age_s"] > every + 0.5
        )

    with serving(Daemon(tmp_path, args)) as daemon:
        send(pull, sample_log_lines(1))
        daemon.wait_status(lambda s: s["snapshot"]["written"] == 1, "the first snapshot")
        # This machine's speed varies tenfold with its load: longer messages until one
        # ingest call outlasts the interval (a message is one call: one line per batch).
        for sent, chars in enumerate((300, 700, 1600, 3600), start=2):
            send(pull, long_lines(1, chars))
            doc = daemon.wait_status(
                lambda s, n=sent: waiting(s) or s["sources"]["zmq-pull"]["ingested"] == n,
                f"a {chars}-character message in the engine or ingested",
            )
            if waiting(doc):
                break
        else:
            pytest.fail("no ingest call outlasted the snapshot interval")
        row = table_row(render_status_table(doc), "snapshot")
        assert "nothing new since" not in row, row
        assert "due: waiting for the engine, ingesting for" in row, row
        assert snapshot_ok(doc) is None
        # Once the batch is in, the snapshot that waited is written.
        daemon.wait_status(
            lambda s: (
                s["sources"]["zmq-pull"]["ingested"] == sent
                and s["snapshot"]["written"] > doc["snapshot"]["written"]
                and s["snapshot"]["up_to_date"]
            ),
            "the long message ingested and the snapshot written",
        )
