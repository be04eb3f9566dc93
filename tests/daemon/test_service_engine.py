"""The engine with the tiny model, in process: batches, triggers, records, failures survived;
and the service's signal flags."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamd.daemon.config import CacheConfig, Config, ModelConfig, SummaryConfig
from streamd.daemon.engine import Engine, RateWindow, utc_timestamp
from streamd.daemon.gpu import gpu_status
from streamd.daemon.ingest import IngestQueue, Lines
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.service import Service
from streamd.daemon.session_worker import Ingested, SessionWorker

POISON = "this line makes the worker fail"


def tiny_config(model_dir: Path, every_tokens: int = 0) -> Config:
    return Config(
        model=ModelConfig(name=str(model_dir), device="cpu"),
        cache=CacheConfig(max_capacity=256, chunk=64),
        summary=SummaryConfig(every_tokens=every_tokens, every_seconds=0.0, max_tokens=8),
    )


class FailsOnPoison(SessionWorker):
    """The real worker, except that a batch holding POISON raises, as a CUDA error would."""

    def ingest(self, text: str) -> Ingested:
        if POISON in text:
            raise RuntimeError("boom")
        return super().ingest(text)


class Running:
    def __init__(self, engine: Engine, queue: IngestQueue, records: list[dict[str, Any]]):
        self.engine, self.queue, self.records = engine, queue, records

    async def feed(self, *texts: str) -> None:
        for text in texts:
            await self.queue.put(Lines("test", (text,)), wait=True)

    async def until(self, predicate: Any, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.01)


@pytest.fixture
async def running(tiny_model_dir: Path) -> AsyncIterator[Running]:
    records: list[dict[str, Any]] = []

    async def keep(record: dict[str, Any]) -> None:
        records.append(record)

    metrics = StreamdMetrics()
    engine = Engine(tiny_config(tiny_model_dir, 100), metrics, keep, FailsOnPoison(metrics))
    await engine.load()
    queue = IngestQueue()
    task = asyncio.create_task(engine.run_ingest(queue))
    try:
        yield Running(engine, queue, records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert engine.stop(5)


async def test_a_failed_batch_is_counted_and_the_next_one_ingested(running: Running) -> None:
    await running.feed(POISON)
    await running.until(lambda: running.engine.errors.value(stage="ingest") == 1)
    await running.feed("Jan 31 12:00:00 host sshd[1]: Accepted publickey for admin")
    await running.until(lambda: running.engine.stats and running.engine.stats.tokens_ingested)


async def test_every_n_tokens_a_summary_record_is_handed_over(running: Running) -> None:
    await running.feed(
        *(f"Jan 31 12:00:{i:02} host app[{i}]: request {i} served" for i in range(30))
    )
    await running.until(lambda: len(running.records) >= 2)
    first, second = running.records[:2]
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["trigger"] == "tokens" and first["stream_tokens"] >= 100
    assert second["stream_tokens"] - first["stream_tokens"] >= 100
    assert first["window_last"] - first["window_first"] + 1 <= 256


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
