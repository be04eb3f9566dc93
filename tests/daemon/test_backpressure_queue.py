"""Backpressure in the ingest queue: drop-oldest evicts the oldest messages of drop-oldest
sources (never a block source's, never one the engine has begun), counts each one, and
keeps the queue inside its bound; block waits. On a real event loop, no mocks."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from streamd.connectors import RawMessage
from streamd.daemon.control.status import source_counts
from streamd.daemon.intake.ingest import IngestQueue, Intake, Lines, joined_text
from streamd.daemon.metrics import StreamdMetrics
from streamd.daemon.tools.testing import WAIT_S


def msg(source: str, *texts: str) -> Lines:
    return Lines(source, tuple(texts))


async def drain(queue: IngestQueue, budget: int = 10**9) -> list[str]:
    taken: list[str] = []
    while queue.depth:
        taken += [line for item in await queue.take(budget) for line in item.lines]
    return taken


def reconciles(row: dict[str, int]) -> bool:
    return row["received"] == row["ingested"] + row["dropped"] + row["rejected"] + row["queued"]


async def test_the_oldest_messages_make_room_and_the_freshest_stay() -> None:
    queue = IngestQueue(max_chars=30)  # room for three 9-char messages (8 + newline)
    for i in range(3):
        assert await queue.put_evicting(msg("sub", f"line {i:03}")) == (True, [])
    queued, evicted = await queue.put_evicting(msg("sub", "line 003"))
    assert queued and [joined_text([item]) for item in evicted] == ["line 000"]
    queued, evicted = await queue.put_evicting(msg("sub", "a line of twenty chr"))  # 21 chars
    assert queued and [joined_text([item]) for item in evicted] == ["line 001", "line 002"]
    assert queue.chars <= queue.max_chars
    assert await drain(queue) == ["line 003", "a line of twenty chr"]


async def test_eviction_takes_the_oldest_of_any_drop_oldest_source() -> None:
    # A flood on one drop-oldest source must not starve another: the oldest goes first,
    # whichever source sent it.
    queue = IngestQueue(max_chars=20)
    await queue.put_evicting(msg("mqtt", "mqtt-old"))
    await queue.put_evicting(msg("sub", "sub-0001"))
    _, evicted = await queue.put_evicting(msg("sub", "sub-0002"))
    assert [item.source for item in evicted] == ["mqtt"]
    _, evicted = await queue.put_evicting(msg("mqtt", "mqtt-new"))
    assert [joined_text([item]) for item in evicted] == ["sub-0001"]
    assert queue.queued_by_source() == {"sub": 1, "mqtt": 1}
    assert await drain(queue) == ["sub-0002", "mqtt-new"]


async def test_a_block_sources_messages_are_never_evicted() -> None:
    queue = IngestQueue(max_chars=20)
    assert await queue.put(msg("pull", "pull-one"), wait=True)
    assert await queue.put_evicting(msg("sub", "sub-0001")) == (True, [])
    _, evicted = await queue.put_evicting(msg("sub", "sub-0002"))
    assert [item.source for item in evicted] == ["sub"]
    # Only the block source's message could go to fit this one: it is refused instead,
    # and nothing is evicted for nothing.
    before = queue.queued_by_source()
    assert await queue.put_evicting(msg("sub", "x" * 15)) == (False, [])
    assert queue.queued_by_source() == before == {"pull": 1, "sub": 1}
    assert await drain(queue) == ["pull-one", "sub-0002"]


async def test_a_message_the_engine_has_begun_is_never_evicted() -> None:
    queue = IngestQueue(max_chars=40)
    await queue.put_evicting(msg("sub", "aaaa", "bbbb", "cccc"))  # 15 chars
    await queue.put_evicting(msg("sub", "next-one"))
    part = await queue.take(max_chars=5)  # the engine took "aaaa": the rest is its
    assert joined_text(part) == "aaaa" and not part[0].last
    _, evicted = await queue.put_evicting(msg("sub", "n" * 25))
    assert [joined_text([item]) for item in evicted] == ["next-one"]
    rest = await queue.take(max_chars=100)
    assert joined_text(rest[:1]) == "bbbb\ncccc" and rest[0].last  # counted on this part
    assert joined_text(rest[1:]) == "n" * 25


async def test_an_oversized_message_replaces_everything_evictable() -> None:
    queue = IngestQueue(max_chars=10)
    await queue.put_evicting(msg("sub", "one"))
    await queue.put_evicting(msg("sub", "two"))
    queued, evicted = await queue.put_evicting(msg("sub", "x" * 50))  # larger than the bound
    assert queued and len(evicted) == 2
    assert queue.depth == 1


async def test_evicted_messages_are_counted_dropped_by_their_own_source() -> None:
    metrics = StreamdMetrics()
    intake = Intake(IngestQueue(max_chars=30), metrics)
    await intake.deliver(RawMessage("mqtt", b"from mqtt"), wait_when_full=False)
    for i in range(5):
        await intake.deliver(RawMessage("zmq-sub", b"sub %04d" % i), wait_when_full=False)
    counts = source_counts(metrics, [], intake.queue.queued_by_source())
    assert counts["mqtt"]["dropped_by_reason"] == {"queue_full": 1}
    assert counts["zmq-sub"]["dropped_by_reason"] == {"queue_full": 2}
    assert counts["zmq-sub"]["queued"] == 3 and counts["mqtt"]["queued"] == 0
    assert all(reconciles(row) for row in counts.values())
    assert metrics.queue_depth.value() == 3
    assert await drain(intake.queue) == ["sub 0002", "sub 0003", "sub 0004"]


async def test_block_still_waits_for_room_beside_drop_oldest() -> None:
    queue = IngestQueue(max_chars=20)
    await queue.put_evicting(msg("sub", "sub-0001"))
    await queue.put(msg("pull", "pull-001"), wait=True)
    waiting = asyncio.create_task(queue.put(msg("pull", "pull-002"), wait=True))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # the sub message could go, but a block source waits its turn
    assert joined_text(await queue.take(max_chars=9)) == "sub-0001"
    assert await asyncio.wait_for(waiting, WAIT_S)
    assert await drain(queue) == ["pull-001", "pull-002"]


# A random mix of puts (both policies) and takes: every message is taken once, evicted once,
# or still queued; lines come out in arrival order; the bound holds.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("evicting"), st.sampled_from(["sub", "mqtt"]), st.integers(1, 4)),
        # "sub" too: a source that mixes policies must not break the queue either.
        st.tuples(st.just("block"), st.sampled_from(["pull", "sub"]), st.integers(1, 4)),
        st.tuples(st.just("take"), st.just(""), st.integers(1, 30)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_every_message_is_taken_evicted_or_queued_once(ops: list[tuple[str, str, int]]) -> None:
    asyncio.run(_run_operations(ops))


async def _run_operations(ops: list[tuple[str, str, int]]) -> None:
    queue = IngestQueue(max_chars=40)
    sent: list[str] = []
    must_stay: set[str] = set()  # lines of messages put with wait (block)
    taken: list[str] = []
    evicted: list[Lines] = []
    for number, (op, source, size) in enumerate(ops):
        lines = tuple(f"{source}{number}-{n}" for n in range(size))
        if op == "take":
            if queue.depth:  # an empty queue's take waits for a message
                taken += [line for item in await queue.take(size) for line in item.lines]
            continue
        item = Lines(source, lines)
        if op == "block":
            if not await queue.put(item, wait=False):  # full: a real source would wait
                continue
            must_stay.update(lines)
        else:
            queued, gone = await queue.put_evicting(item)
            evicted += gone
            if not queued:
                continue
        sent += lines
        # Over the bound only as the empty queue's one message (one larger than the bound).
        assert queue.chars <= queue.max_chars or queue.depth == 1
    evicted_lines = {line for item in evicted for line in item.lines}
    assert not evicted_lines & must_stay
    rest = await drain(queue, 7)
    assert sorted(taken + rest + list(evicted_lines)) == sorted(sent)
    assert taken + rest == [line for line in sent if line not in evicted_lines]
    assert queue.chars == 0 and queue.queued_by_source() == {}
