"""The engine with the tiny model, in process: batches, triggers, records, failures survived,
every message counted; the control handler's tune; and the service's signal flags and
startup failures."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.config import (
    Config,
    ControlConfig,
    MetricsConfig,
)
from streamd.daemon.control.handlers import ControlHandler
from streamd.daemon.control.protocol import ControlError
from streamd.daemon.control.status import READY
from streamd.daemon.engine.api import Ingested, SummaryRecord
from streamd.daemon.engine.gpu import NO_ANSWER, NvmlReader, gpu_status
from streamd.daemon.engine.session import OnChunk, OnRetry, Session
from streamd.daemon.intake.ingest import IngestQueue, Lines
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.scheduling.scheduler import Engine, RateWindow, utc_timestamp
from streamd.daemon.service import Service, StartupError
from streamd.daemon.tools.testing import WAIT_S
from tests.daemon.daemon_testing import tiny_config

POISON = "this line makes the worker fail"


class FailsOnPoison(Session):
    """The real session, except that a batch holding POISON raises, as a CUDA error would."""

    def ingest(
        self, text: str, on_chunk: OnChunk | None = None, on_retry: OnRetry | None = None
    ) -> Ingested:
        if POISON in text:
            raise RuntimeError("boom")
        return super().ingest(text, on_chunk, on_retry)


class Running:
    def __init__(
        self,
        engine: Engine,
        queue: IngestQueue,
        records: list[SummaryRecord],
        metrics: StreamdMetrics,
        task: asyncio.Task[None],
    ):
        self.engine, self.queue, self.records = engine, queue, records
        self.metrics, self.task = metrics, task

    async def feed(self, *texts: str) -> None:
        for text in texts:
            await self.queue.put(Lines("test", (text,)), wait=True)

    async def until(self, predicate: Any, timeout_s: float = WAIT_S) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.01)


@pytest.fixture
async def running(tiny_model_dir: Path) -> AsyncIterator[Running]:
    records: list[SummaryRecord] = []

    async def keep(record: SummaryRecord) -> None:
        records.append(record)

    metrics = StreamdMetrics()
    engine = Engine(tiny_config(tiny_model_dir, 100), metrics, keep, FailsOnPoison)
    await engine.load()
    queue = IngestQueue()
    task = asyncio.create_task(engine.run_ingest(queue))
    try:
        yield Running(engine, queue, records, metrics, task)
    finally:
        await queue.close()
        await asyncio.wait_for(task, WAIT_S)
        assert engine.stop(5)


async def test_a_failed_batch_is_counted_and_the_next_one_ingested(running: Running) -> None:
    m = running.metrics
    await running.feed(POISON)
    await running.until(lambda: m.engine_errors.value(stage="ingest") == 1)
    # Its message is counted dropped: received = ingested + dropped + rejected + queued.
    assert m.ingest_dropped.value(source="test", reason="engine_error") == 1
    await running.feed("Jan 31 12:00:00 host sshd[1]: Accepted publickey for admin")
    await running.until(lambda: running.engine.stats and running.engine.stats.tokens_ingested)
    await running.until(lambda: m.ingest_ingested.value(source="test") == 1)


async def test_a_message_taken_in_parts_is_counted_ingested_once(running: Running) -> None:
    lines = tuple(f"Jan 31 12:00:{i % 60:02} host app[{i}]: request {i} served" for i in range(60))
    await running.queue.put(Lines("test", lines), wait=True)  # ~2.7k chars: several batches
    await running.until(lambda: running.queue.depth == 0)
    await running.queue.close()
    await asyncio.wait_for(running.task, WAIT_S)
    assert running.metrics.ingest_ingested.value(source="test") == 1
    assert running.metrics.prefill_chunk.count() > 2  # it did go in parts


async def test_closing_the_queue_ends_ingest_after_the_batch_in_flight(running: Running) -> None:
    # The engine thread is busy (as with a long summary): the batch taken meanwhile waits
    # behind it. Shutdown must let it finish, not cancel it uncounted.
    busy = asyncio.create_task(running.engine.run_on_thread(time.sleep, 0.5))
    await running.feed("Jan 31 12:00:00 host sshd[1]: Accepted publickey for admin")
    await running.until(lambda: running.queue.depth == 0)  # taken, in flight
    await running.queue.close()
    await asyncio.wait_for(running.task, WAIT_S)
    await busy
    assert running.metrics.ingest_ingested.value(source="test") == 1
    assert running.engine.stats is not None and running.engine.stats.tokens_ingested > 0


async def test_every_n_tokens_a_summary_record_is_handed_over(running: Running) -> None:
    await running.feed(
        *(f"Jan 31 12:00:{i:02} host app[{i}]: request {i} served" for i in range(30))
    )
    await running.until(lambda: len(running.records) >= 2)
    first, second = running.records[:2]
    assert (first.seq, second.seq) == (1, 2)
    assert first.trigger == "tokens" and first.stream_tokens >= 100
    assert second.stream_tokens - first.stream_tokens >= 100
    assert first.window_last - first.window_first + 1 <= 256


async def test_resizing_refuses_with_the_sessions_reason(running: Running) -> None:
    with pytest.raises(ValueError, match="above the pinned prefix"):
        await running.engine.set_max_capacity(10)
    assert await running.engine.set_max_capacity(200) == (256, 200)
    assert running.engine.stats is not None and running.engine.stats.max_capacity == 200


def test_rate_window_and_timestamps() -> None:
    rate = RateWindow(window_s=60)
    rate.add(600)
    assert rate.per_second() > 0
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"


def test_a_second_signal_forces_the_exit(tiny_model_dir: Path) -> None:
    service = Service(tiny_config(tiny_model_dir))
    service.handle_exit(signal.SIGTERM)
    assert service.should_exit.is_set() and not service.force_exit.is_set()
    service.handle_exit(signal.SIGINT)
    assert service.force_exit.is_set()


def test_gpu_status_says_why_there_is_no_reading() -> None:
    assert gpu_status(None) == {"available": False, "reason": "no GPU"}
    # A GPU NVML cannot find (here: no NVML library at all, or no such UUID) is a reason,
    # not an error: `status` must answer whatever the driver does.
    unknown = gpu_status("GPU-00000000-0000-0000-0000-000000000000")
    assert unknown["available"] is False and unknown["reason"].startswith("NVML unavailable")


async def test_concurrent_tunes_do_not_undo_each_other(tiny_model_dir: Path) -> None:
    service = Service(tiny_config(tiny_model_dir))
    await service.engine.load()
    service.state = READY
    handler = ControlHandler(service)
    try:
        # The resize waits behind a busy engine thread while the other tune applies.
        busy = asyncio.create_task(service.engine.run_on_thread(time.sleep, 0.3))
        resized, retimed = await asyncio.gather(
            handler.tune({"max_capacity": 200}), handler.tune({"summary_every_tokens": 50})
        )
        await busy
    finally:
        assert service.engine.stop(5)
    assert service.config.cache.max_capacity == 200
    assert service.config.summary.every_tokens == 50
    assert resized == {"changed": {"max_capacity": [256, 200]}}
    assert retimed == {"changed": {"summary_every_tokens": [0, 50]}}


async def test_a_capacity_below_the_prefix_is_refused_without_waiting_for_the_engine(
    tiny_model_dir: Path,
) -> None:
    """A capacity the config allows but the pinned prefix does not fit waited behind a busy
    engine to be refused (17 s, seen); the loop knows the prefix, so it refuses at once."""
    service = Service(tiny_config(tiny_model_dir))
    await service.engine.load()
    service.state = READY
    handler = ControlHandler(service)
    release = threading.Event()
    busy = asyncio.create_task(service.engine.run_on_thread(release.wait, WAIT_S))
    try:
        with pytest.raises(ControlError, match=r"tune: max_capacity = 20: must be an integer abo"):
            await handler.tune({"max_capacity": 20})  # the tiny model's prefix is longer
        assert not busy.done()  # refused while the engine thread was still busy
    finally:
        release.set()
        await busy
        assert service.engine.stop(5)
    assert service.config.cache.max_capacity == 256


async def test_a_wedged_nvml_makes_status_say_so_not_hang() -> None:
    def wedged(uuid: str | None) -> dict[str, Any]:
        time.sleep(3)
        return {"available": True}

    reader = NvmlReader(wedged, timeout_s=0.2)
    began = time.monotonic()
    assert await reader.status("GPU-1") == {"available": False, "reason": NO_ANSWER}
    assert await reader.status("GPU-1") == {"available": False, "reason": NO_ANSWER}
    assert time.monotonic() - began < 1.5
    assert await reader.status(None) == {"available": False, "reason": "no GPU"}


class FailsToOpenSources(Service):
    async def _open_sources(self) -> None:
        raise RuntimeError("an error nobody expected")


async def test_any_startup_failure_closes_everything_and_is_one_line(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    socket = tmp_path / "control.sock"
    config = tiny_config(tiny_model_dir)
    config = Config(
        model=config.model,
        cache=config.cache,
        summary=config.summary,
        control=ControlConfig(socket=socket),
        metrics=MetricsConfig(port=0),
    )
    service = FailsToOpenSources(config)
    with pytest.raises(StartupError, match="RuntimeError: an error nobody expected") as caught:
        await service.serve()
    assert caught.value.exit_code == 1
    assert not socket.exists()  # no stale control socket left behind
