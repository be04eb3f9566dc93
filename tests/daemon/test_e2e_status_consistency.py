"""`streamd status` must not contradict itself (#11, observation 14), against a real daemon
(`streamd run` as a process, tiny model, CPU): the tokens line beside the ingest chunk
latency while text streams, and the last summary of a restarted daemon. Each status
document read is also rendered as the CLI's table (the same function the CLI calls), so a
line is checked against the document it came from.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.control.status import render_status_table
from streamd.daemon.tools.testing import free_zmq_endpoint, wait_until
from tests.daemon.daemon_testing import Daemon, cli, daemon_args, sample_log_lines, serving

pytestmark = pytest.mark.network


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
