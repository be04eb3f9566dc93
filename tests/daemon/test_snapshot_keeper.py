"""The snapshot keeper in process, with the real engine and session (tiny model, CPU):
when a snapshot is written, what a failed write does, and a resume of what it wrote."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamd.daemon.config import Config
from streamd.daemon.engine.api import SummaryRecord
from streamd.daemon.intake.ingest import IngestQueue, Lines
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.scheduling.scheduler import Engine
from streamd.daemon.snapshot import window_digest
from streamd.daemon.snapshot_keeper import SnapshotKeeper
from streamd.daemon.tools.testing import WAIT_S
from tests.daemon.daemon_testing import tiny_config

LINES = tuple(
    f"Jan 31 12:00:{i:02} host sshd[{i}]: Failed password from 10.0.0.{i}" for i in range(6)
)


class Daemonless:
    """An engine with its ingest loop and a keeper, as the service wires them."""

    def __init__(self, config: Config) -> None:
        self.metrics = StreamdMetrics()
        self.engine = Engine(config, self.metrics, self._keep)
        self.keeper = SnapshotKeeper(config, self.engine, self.metrics)
        self.queue = IngestQueue()
        self.records: list[SummaryRecord] = []
        self.task: asyncio.Task[None] | None = None

    async def _keep(self, record: SummaryRecord) -> None:
        self.records.append(record)

    async def start(self) -> None:
        await self.engine.load()
        await self.keeper.resume()
        self.task = asyncio.create_task(self.engine.run_ingest(self.queue))

    async def feed(self, *lines: str) -> None:
        ingested = self.engine.stats.tokens_ingested if self.engine.stats else 0
        await self.queue.put(Lines("test", lines), wait=True)
        async with asyncio.timeout(WAIT_S):
            while not (self.engine.stats and self.engine.stats.tokens_ingested > ingested):
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        await self.queue.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, WAIT_S)
        assert self.engine.stop(5)


@pytest.fixture
async def daemonless(tiny_model_dir: Path, tmp_path: Path) -> AsyncIterator[Daemonless]:
    running = Daemonless(tiny_config(tiny_model_dir, max_tokens=4, state_dir=tmp_path / "state"))
    await running.start()
    try:
        yield running
    finally:
        await running.close()


def written(running: Daemonless) -> tuple[int, int]:
    status = running.keeper.status()
    return status["written"], status["failed"]


async def test_a_snapshot_is_written_only_when_the_stream_moved(daemonless: Daemonless) -> None:
    keeper = daemonless.keeper
    await keeper.take("periodic")
    assert written(daemonless) == (0, 0) and not keeper.path.exists()  # nothing to keep yet
    await daemonless.feed(*LINES)
    await keeper.take("periodic")
    await keeper.take("periodic")
    assert written(daemonless) == (1, 0)
    await daemonless.engine.summarize("request")  # a new summary counts as movement
    await keeper.take("periodic")
    assert written(daemonless) == (2, 0)
    saved = json.loads(keeper.path.read_text())
    assert saved["last_summary"] == daemonless.records[-1].as_json()
    assert keeper.status()["window_digest"] == window_digest(saved["session"]["window_ids"])


async def test_status_says_when_an_old_snapshot_is_still_the_whole_state(
    daemonless: Daemonless,
) -> None:
    """ "snapshot last 3 min ago" beside a 60 s interval read as a keeper that stopped: the
    keeper skips writing the same state again, and status now says so."""
    from streamd.daemon.control.status_table import _snapshot_line

    keeper = daemonless.keeper
    assert keeper.status()["up_to_date"] is False  # none written yet
    await daemonless.feed(*LINES)
    await keeper.take("periodic")
    assert keeper.status()["up_to_date"] is True
    assert _snapshot_line(keeper.status()).endswith("(nothing new since)")
    await daemonless.feed(*LINES)  # the stream moved: the snapshot is behind now
    assert keeper.status()["up_to_date"] is False
    assert "nothing new" not in _snapshot_line(keeper.status())


async def test_a_failed_write_is_counted_and_the_next_tick_tries_again(
    daemonless: Daemonless,
) -> None:
    keeper = daemonless.keeper
    await daemonless.feed(*LINES)
    keeper.path.parent.parent.mkdir(parents=True, exist_ok=True)
    keeper.path.parent.write_text("a file where the state directory should be")  # fault
    await keeper.take("periodic")
    assert written(daemonless) == (0, 1)
    assert "writing" in keeper.status()["write_error"]
    assert daemonless.metrics.snapshots.value(result="failed") == 1
    keeper.path.parent.unlink()
    await keeper.take("periodic")
    assert written(daemonless) == (1, 1) and keeper.path.exists()
    assert keeper.status()["write_error"] is None


async def test_what_was_written_is_resumed_by_the_next_engine(
    daemonless: Daemonless, tiny_model_dir: Path, tmp_path: Path
) -> None:
    await daemonless.feed(*LINES)
    record = await daemonless.engine.summarize("request")
    await daemonless.feed(*LINES[:2])  # text after the summary: not summarized yet
    await daemonless.keeper.final()
    before = daemonless.engine.stats
    assert before is not None

    restarted = Daemonless(tiny_config(tiny_model_dir, max_tokens=4, state_dir=tmp_path / "state"))
    await restarted.start()
    try:
        after = restarted.engine.stats
        assert after is not None
        assert (after.tokens_ingested, after.position, after.used) == (
            before.tokens_ingested, before.position, before.used,
        )  # fmt: skip
        assert restarted.engine.summaries_emitted == record.seq
        # The last summary's time goes on too (status said "1 emitted, last none yet").
        last = daemonless.engine.last_summary_epoch_s  # the record's time keeps milliseconds
        assert restarted.engine.last_summary_epoch_s == pytest.approx(last, abs=1e-3)
        assert (
            restarted.engine.unsummarized_tokens
            == before.tokens_ingested - record.stream_tokens
            > 0
        )
        assert (
            restarted.keeper.status()["window_digest"]
            == daemonless.keeper.status()["window_digest"]
        )
        assert (await restarted.engine.summarize("request")).seq == record.seq + 1
    finally:
        await restarted.close()
