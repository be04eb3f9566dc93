"""Ingest faster than the model, through a real daemon: `streamd run` as a subprocess (tiny
model, CPU) with a small ingest queue, fed over real ZeroMQ sockets.

- SUB (drop-oldest): a flood is received in full, the oldest queued lines make room and are
  counted dropped, every message is accounted for, and memory stays flat flood after flood.
- PULL (block): the queue fills, the daemon stops reading, and every line sent is ingested.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamd.daemon.tools.testing import free_zmq_endpoint
from tests.daemon.daemon_testing import Daemon, all_counted, daemon_args, row, serving

pytestmark = pytest.mark.network

QUEUE_MAX_CHARS = 1024  # the least allowed: a few flood messages
FLOOD_MESSAGES = 20_000
FLOOD_BYTES = 500  # a message: one line of English, this long
# A flood is 10 MB of text; a daemon that kept most of one, per flood, fails this.
RSS_MARGIN_BYTES = 8 * 1024 * 1024


class Feeds:
    def __init__(self) -> None:
        self.pull = free_zmq_endpoint()
        self.context = zmq.Context()
        # XPUB: a publisher that also hears subscriptions, so we know when the daemon's
        # has landed (PUB/SUB drops whatever is published before).
        self.publisher = self.context.socket(zmq.XPUB)
        # No high-water mark on our side: the publisher queues rather than drops, so every
        # message we publish reaches the daemon's SUB socket, and its counts can be exact.
        self.publisher.setsockopt(zmq.SNDHWM, 0)
        port = self.publisher.bind_to_random_port("tcp://127.0.0.1")
        self.sub = f"tcp://127.0.0.1:{port}"

    def wait_subscribed(self) -> None:
        assert self.publisher.poll(60_000), "the daemon never subscribed"
        assert self.publisher.recv() == b"\x01"  # subscribe, to every topic

    def close(self) -> None:
        self.publisher.close(linger=0)
        self.context.term()


@pytest.fixture(scope="module")
def feeds() -> Iterator[Feeds]:
    feeds = Feeds()
    yield feeds
    feeds.close()


@pytest.fixture(scope="module")
def daemon(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, feeds: Feeds
) -> Iterator[Daemon]:
    args = daemon_args(
        tiny_model_dir, "--zmq-bind", feeds.pull, "--zmq-sub", feeds.sub,
        "--queue-max-chars", str(QUEUE_MAX_CHARS),
    )  # fmt: skip
    with serving(Daemon(tmp_path_factory.mktemp("daemon"), args)) as daemon:
        yield daemon


def settled_at(daemon: Daemon, source: str, received: int, timeout_s: float = 60.0) -> Any:
    """The status once `source` has received `received` messages and every one is ingested,
    dropped or rejected (none queued, none in flight): received = the sum, exactly."""

    def settled(s: dict[str, Any]) -> bool:
        # The daemon's whole queue empty, not only this source's share of it.
        return all_counted(s, source, received) and s["queue"]["depth"] == 0

    return daemon.wait_status(settled, f"{received} messages on {source}, all counted", timeout_s)


def rss_bytes(daemon: Daemon) -> int:
    assert daemon.process is not None
    status = Path(f"/proc/{daemon.process.pid}/status").read_text()
    kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kib) * 1024


def flood(feeds: Feeds, round_: int) -> None:
    filler = "the quick brown fox jumps over the lazy dog " * (FLOOD_BYTES // 44 + 1)
    for i in range(FLOOD_MESSAGES):
        line = f"Jan 31 12:00:00 host flood[{round_}]: message {i:05} {filler}"
        feeds.publisher.send(line[:FLOOD_BYTES].encode())


def test_a_sub_flood_drops_the_oldest_counts_everything_and_memory_stays_flat(
    daemon: Daemon, feeds: Feeds
) -> None:
    feeds.wait_subscribed()
    start = daemon.status()
    assert start is not None
    rss = []
    after = row(start, "zmq-sub")
    for round_ in (1, 2):
        flood(feeds, round_)
        status = settled_at(daemon, "zmq-sub", after["received"] + FLOOD_MESSAGES)
        rss.append(rss_bytes(daemon))
        previous, after = after, row(status, "zmq-sub")
        dropped = after["dropped"] - previous["dropped"]
        # The model cannot keep up: most of the flood made room for newer lines; some of
        # it was read all the same.
        assert dropped > FLOOD_MESSAGES // 2
        assert after["ingested"] > previous["ingested"]
        assert set(after["dropped_by_reason"]) == {"queue_full"}
        assert after["rejected"] == previous["rejected"]
        assert status["queue"]["max_chars"] == QUEUE_MAX_CHARS
    growth = rss[1] - rss[0]
    assert growth < RSS_MARGIN_BYTES, f"RSS grew by {growth} bytes in the second flood: {rss}"


def test_a_pull_sender_is_held_back_and_every_line_is_ingested(
    daemon: Daemon, feeds: Feeds
) -> None:
    start = daemon.status()
    assert start is not None
    before = row(start, "zmq-pull")
    lines = [f"Jan 31 12:00:{i % 60:02} host app[{i}]: held back, not dropped" for i in range(60)]
    # They arrive at once, far faster than the model reads: the queue cannot hold them all,
    # and a drop-oldest source would lose some here (as the SUB flood shows).
    assert sum(len(line) + 1 for line in lines) > 2 * QUEUE_MAX_CHARS
    push = feeds.context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDTIMEO, 60_000)  # a blocked send fails the test rather than hang it
    push.connect(feeds.pull)
    try:
        for line in lines:
            push.send(line.encode())
        after = row(settled_at(daemon, "zmq-pull", before["received"] + len(lines)), "zmq-pull")
    finally:
        push.close(linger=0)
    assert after["ingested"] - before["ingested"] == len(lines)
    assert after["dropped"] == before["dropped"] and after["rejected"] == before["rejected"]
