"""The ingest queue and the sources' deliver callback, on a real event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from streamd.connectors import RawMessage
from streamd.daemon.control.status import source_counts
from streamd.daemon.intake.ingest import IngestQueue, Intake, Lines, joined_text
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.tools.testing import WAIT_S


def lines(source: str, *texts: str) -> Lines:
    return Lines(source, tuple(texts))


async def test_batches_keep_order_and_stay_near_the_budget() -> None:
    queue = IngestQueue()
    for i in range(5):
        await queue.put(lines("a", f"line {i:02}"), wait=True)  # 8 chars + newline each
    first = await queue.take(max_chars=20)
    second = await queue.take(max_chars=20)
    assert joined_text(first) == "line 00\nline 01"
    assert joined_text(second) == "line 02\nline 03"
    assert joined_text(await queue.take(max_chars=20)) == "line 04"
    assert (queue.depth, queue.chars) == (0, 0)


async def test_a_large_message_is_taken_in_parts_of_whole_lines() -> None:
    queue = IngestQueue()
    await queue.put(lines("a", *(f"{i:04}" for i in range(10))), wait=True)  # 5 chars a line
    parts = [await queue.take(max_chars=12) for _ in range(5)]
    assert [joined_text(part) for part in parts] == [
        "0000\n0001", "0002\n0003", "0004\n0005", "0006\n0007", "0008\n0009",
    ]  # fmt: skip
    assert queue.depth == 0


async def test_a_line_longer_than_the_budget_still_goes_alone() -> None:
    queue = IngestQueue()
    await queue.put(lines("a", "x" * 50, "y"), wait=True)
    assert joined_text(await queue.take(max_chars=10)) == "x" * 50
    assert joined_text(await queue.take(max_chars=10)) == "y"


async def test_a_full_queue_refuses_or_waits_for_room() -> None:
    queue = IngestQueue(max_chars=10)
    assert await queue.put(lines("a", "123456789"), wait=False)  # 10 chars: full
    assert not await queue.put(lines("a", "x"), wait=False)
    waiting = asyncio.create_task(queue.put(lines("a", "later"), wait=True))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    await queue.take(max_chars=100)
    assert await asyncio.wait_for(waiting, WAIT_S)
    assert joined_text(await queue.take(max_chars=100)) == "later"


async def test_an_empty_queue_takes_a_message_over_the_bound() -> None:
    queue = IngestQueue(max_chars=4)
    assert await queue.put(lines("a", "far too long"), wait=False)


def raw(payload: bytes, source: str = "zmq-pull") -> RawMessage:
    return RawMessage(source, payload)


async def test_intake_counts_by_connector_and_reason() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(max_chars=30), metrics)
    await intake.deliver(raw(b"one\ntwo\n"), wait_when_full=True)
    # The envelope names another source: the counters still use the connector's name.
    envelope = b'{"text": "three", "source": "evil-label"}'
    await intake.deliver(raw(envelope), wait_when_full=True)
    await intake.deliver(raw(b"  \n", "mqtt"), wait_when_full=False)
    await intake.deliver(raw(b'{"text": 5}', "mqtt"), wait_when_full=False)
    await intake.deliver(raw(b"x" * 40, "mqtt"), wait_when_full=False)  # no room: dropped
    counts = source_counts(metrics, ["zmq-sub"], intake.queue.queued_by_source())
    assert counts["zmq-pull"]["received"] == 2 and counts["zmq-pull"]["rejected"] == 0
    assert counts["zmq-pull"]["queued"] == 2
    assert counts["mqtt"] | {} == {
        "received": 3,
        "ingested": 0,
        "rejected": 2,
        "dropped": 1,
        "queued": 0,
        "rejected_by_reason": {"empty": 1, "bad_json_envelope": 1},
        "dropped_by_reason": {"queue_full": 1},
    }
    assert counts["zmq-sub"]["received"] == 0  # configured, silent, still listed
    assert "evil-label" not in counts
    assert intake.queue.depth == 2 and metrics.queue_depth.value() == 2


async def test_what_is_queued_at_shutdown_is_counted_as_dropped() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(), metrics)
    for source in ("zmq-pull", "zmq-pull", "mqtt"):
        await intake.deliver(raw(b"line", source), wait_when_full=True)
    assert intake.drop_queued("shutdown") == 3
    counts = source_counts(metrics, [])
    assert counts["zmq-pull"]["dropped_by_reason"] == {"shutdown": 2}
    assert counts["mqtt"]["dropped"] == 1
    assert intake.queue.depth == 0


@pytest.mark.parametrize("budget", [1, 7, 64])
async def test_every_line_comes_out_once_in_order(budget: int) -> None:
    queue = IngestQueue()
    sent = [f"m{m}-l{n}" for m in range(4) for n in range(m + 1)]
    for m in range(4):
        await queue.put(lines("a", *(f"m{m}-l{n}" for n in range(m + 1))), wait=True)
    taken: list[str] = []
    while queue.depth:
        taken += [line for item in await queue.take(budget) for line in item.lines]
    assert taken == sent


async def test_a_pull_source_cancelled_while_waiting_for_room_counts_its_message() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(max_chars=10), metrics)
    await intake.deliver(raw(b"123456789"), wait_when_full=True)  # full
    waiting = asyncio.create_task(intake.deliver(raw(b"more"), wait_when_full=True))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    waiting.cancel()  # shutdown closes the source meanwhile
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert metrics.ingest_dropped.value(source="zmq-pull", reason="shutdown") == 1
    row = source_counts(metrics, [], intake.queue.queued_by_source())["zmq-pull"]
    assert row["dropped_by_reason"] == {"shutdown": 1}
    assert row["received"] == row["ingested"] + row["dropped"] + row["rejected"] + row["queued"]


async def test_a_message_of_many_lines_is_taken_in_linear_time() -> None:
    # 50k lines taken 10 at a time: re-summing or re-slicing the rest of the message on
    # every take is 5000 x 50k steps (tens of seconds); taking it in order is milliseconds.
    queue = IngestQueue()
    await queue.put(lines("a", *(["x" * 9] * 50_000)), wait=True)
    began = time.monotonic()
    batches = []
    while queue.depth:
        batches.append(await queue.take(max_chars=100))
    assert time.monotonic() - began < 3.0
    assert sum(len(item.lines) for batch in batches for item in batch) == 50_000
    assert queue.chars == 0
    # Only the part with the last line says so: the message is counted once.
    assert [item.last for batch in batches for item in batch] == [False] * 4999 + [True]


async def test_a_partly_taken_message_dropped_at_shutdown_counts_once() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(), metrics)
    await intake.deliver(raw(b"aaaa\nbbbb\ncccc\n"), wait_when_full=True)
    part = await intake.queue.take(max_chars=5)
    assert joined_text(part) == "aaaa" and not part[0].last
    assert intake.drop_queued("shutdown") == 1
    assert source_counts(metrics, [])["zmq-pull"]["dropped"] == 1


async def test_a_large_payload_is_decoded_off_the_loop() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(), metrics)
    payload = b"".join(b"line %06d\n" % i for i in range(20_000))  # ~220 KiB
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    await intake.deliver(raw(payload), wait_when_full=True)
    ticking.cancel()
    assert ticks > 1  # the loop ran other tasks while the payload was decoded
    taken = [line for item in await intake.queue.take(10**9) for line in item.lines]
    assert len(taken) == 20_000 and taken[-1] == "line 019999"
