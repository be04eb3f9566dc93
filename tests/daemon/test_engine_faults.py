"""Engine faults by FAULT INJECTION: the real Engine and Session on the tiny
model, except that chosen forward passes raise (torch.cuda.OutOfMemoryError, as a GPU short
of memory would, or a RuntimeError). A failed batch is retried once in smaller pieces from
where it failed; only if that fails too is it skipped, counted and logged with context."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
import torch

from streamd.daemon.engine.api import SummaryRecord
from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.engine.session import Session, SessionConfig
from streamd.daemon.intake.ingest import IngestQueue, Lines
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.scheduling.scheduler import Engine
from streamd.daemon.tools.testing import WAIT_S
from tests.daemon.daemon_testing import tiny_config

CHUNK = 64
POISON = "POISON: every forward pass of a batch holding this line fails"
LINES = tuple(
    f"Jan 31 12:00:{i:02} gw kernel: [UFW BLOCK] IN=eth0 SRC=203.0.113.{i} DPT={1000 + i}"
    for i in range(5)
)  # ~80 characters a line, about twice CHUNK tokens in all, under one batch (512 chars)


class Faults:
    """FAULT INJECTION: which forward passes of the stream raise, and what."""

    def __init__(self) -> None:
        self.longer_than: int | None = None  # forward passes of more tokens fail
        self.fail_once_at: set[int] = set()  # these forward passes (1, 2, ...) fail once
        self.error: Callable[[str], Exception] = torch.cuda.OutOfMemoryError
        self.poisoned = False  # the text being ingested holds POISON: every pass fails
        self.forwards = 0

    def before_forward(self, tokens: int) -> None:
        self.forwards += 1
        if self.poisoned:
            raise self.error("injected: poisoned batch")
        if self.forwards in self.fail_once_at:
            self.fail_once_at.discard(self.forwards)
            raise self.error(f"injected: forward pass {self.forwards} fails once")
        if self.longer_than is not None and tokens > self.longer_than:
            raise self.error(f"injected: {tokens} tokens > {self.longer_than}")


class FaultySession(Session):
    """The real session; its stream forward passes go through `faults` first."""

    def __init__(self, config: SessionConfig, loaded: LoadedModel, faults: Faults) -> None:
        self.faults = faults
        super().__init__(config, loaded)

    def _attach_cache(self, layout: Any) -> None:
        super()._attach_cache(layout)
        forward = self.runner.stream

        def stream(input_ids: torch.Tensor, logits_to_keep: int = 1) -> torch.Tensor:
            self.faults.before_forward(int(input_ids.shape[1]))
            return forward(input_ids, logits_to_keep)

        self.runner.stream = stream  # type: ignore[method-assign]

    def tokenize_stream(self, text: str) -> list[int]:
        self.faults.poisoned = POISON in text
        return super().tokenize_stream(text)


class Harness:
    def __init__(self, engine: Engine, queue: IngestQueue, metrics: StreamdMetrics) -> None:
        self.engine, self.queue, self.metrics = engine, queue, metrics
        self.faults = Faults()
        self.sessions: list[FaultySession] = []

    @property
    def session(self) -> FaultySession:
        return self.sessions[0]

    async def ingest(self, *lines: str) -> None:
        """Queue one message; return once the engine has taken and finished it."""
        m = self.metrics
        done_before = m.ingest_ingested.value(source="test") + self.dropped()
        await self.queue.put(Lines("test", lines), wait=True)
        async with asyncio.timeout(WAIT_S):
            while m.ingest_ingested.value(source="test") + self.dropped() == done_before:
                await asyncio.sleep(0.01)

    def dropped(self) -> float:
        return self.metrics.ingest_dropped.value(source="test", reason="engine_error")

    def tokens_of(self, *lines: str) -> int:
        # Session's own method: the injected one would reset `faults.poisoned`.
        return len(Session.tokenize_stream(self.session, "\n".join(lines)))


@pytest.fixture
async def harness(tiny_loaded: LoadedModel, tiny_model_dir: Path) -> AsyncIterator[Harness]:
    async def keep(record: SummaryRecord) -> None:
        pass

    config = tiny_config(tiny_model_dir, chunk=CHUNK)
    metrics, queue = StreamdMetrics(), IngestQueue()
    holder: list[Harness] = []

    def faulty_session(session_config: SessionConfig) -> Session:
        session = FaultySession(session_config, tiny_loaded, holder[0].faults)
        holder[0].sessions.append(session)
        return session

    engine = Engine(config, metrics, keep, faulty_session)
    holder.append(Harness(engine, queue, metrics))
    await engine.load()
    task = asyncio.create_task(engine.run_ingest(queue))
    try:
        yield holder[0]
    finally:
        await queue.close()
        await asyncio.wait_for(task, WAIT_S)
        assert engine.stop(5)


@pytest.fixture
def empty_cache_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on torch.cuda.empty_cache: the names of the threads that called it."""
    calls: list[str] = []
    monkeypatch.setattr(
        torch.cuda, "empty_cache", lambda: calls.append(threading.current_thread().name)
    )
    return calls


def stream_tokens(harness: Harness) -> int:
    stats = harness.engine.stats
    assert stats is not None
    return stats.tokens_ingested


async def test_out_of_memory_is_retried_in_smaller_pieces_and_ingested(
    harness: Harness, empty_cache_calls: list[str]
) -> None:
    harness.faults.longer_than = CHUNK // 2  # a whole chunk is too much; half a chunk fits
    assert harness.tokens_of(*LINES) > CHUNK  # so the first forward pass does fail
    before = stream_tokens(harness)
    with structlog.testing.capture_logs() as logs:
        await harness.ingest(*LINES)
    m = harness.metrics
    assert m.ingest_ingested.value(source="test") == 1 and harness.dropped() == 0
    assert m.ingest_retries.value(outcome="recovered") == 1
    assert m.engine_errors.value(stage="ingest") == 0
    assert stream_tokens(harness) - before == harness.tokens_of(*LINES)  # every token, once
    assert empty_cache_calls == ["streamd-engine"]  # freed on the engine thread, before retrying
    recovered = [e for e in logs if e["event"].startswith("ingest recovered")]
    assert recovered and recovered[0]["sources"] == ["test"]
    assert recovered[0]["first_line"] == LINES[0]


async def test_a_pass_failing_midway_resumes_where_it_failed(
    harness: Harness, empty_cache_calls: list[str]
) -> None:
    harness.faults.error = RuntimeError  # not a memory error: nothing to free
    harness.faults.fail_once_at = {harness.faults.forwards + 2}  # the batch's second pass
    before = stream_tokens(harness)
    await harness.ingest(*LINES)
    assert harness.faults.fail_once_at == set()  # the fault did fire
    assert harness.metrics.ingest_retries.value(outcome="recovered") == 1
    assert harness.metrics.ingest_ingested.value(source="test") == 1
    # The first chunk went in before the failure: the retry goes on from there, so no
    # token is prefilled twice and none is lost.
    assert stream_tokens(harness) - before == harness.tokens_of(*LINES)
    assert empty_cache_calls == []


async def test_a_batch_that_always_fails_is_skipped_counted_logged_and_the_next_ingests(
    harness: Harness, empty_cache_calls: list[str]
) -> None:
    m = harness.metrics
    before = stream_tokens(harness)
    with structlog.testing.capture_logs() as logs:
        await harness.ingest(POISON, *LINES[:2])
    assert harness.dropped() == 1 and m.ingest_ingested.value(source="test") == 0
    assert m.engine_errors.value(stage="ingest") == 1
    assert m.ingest_retries.value(outcome="failed") == 1
    assert stream_tokens(harness) == before
    assert len(empty_cache_calls) == 1
    retry = next(e for e in logs if e["event"].startswith("prefill failed; retrying"))
    assert "OutOfMemoryError" in retry["error"] and retry["tokens_done"] == 0
    skipped = next(e for e in logs if e["event"] == "ingest failed; the batch is skipped")
    assert skipped["log_level"] == "error" and skipped["exc_info"] is True
    assert skipped["sources"] == ["test"] and skipped["messages"] == 1
    assert skipped["lines"] == 3
    assert skipped["chars"] == sum(len(line) + 1 for line in (POISON, *LINES[:2]))
    assert skipped["first_line"] == POISON

    await harness.ingest(*LINES)  # the stream goes on
    assert m.ingest_ingested.value(source="test") == 1
    assert stream_tokens(harness) - before == harness.tokens_of(*LINES)
