"""ZeroMQ PULL and SUB sources against real PUSH / PUB sockets on loopback."""

from __future__ import annotations

import pytest
import zmq
import zmq.asyncio
from connector_testing import ANY_PORT, Inbox, eventually, running

from streamd.connectors.zmq_sources import (
    FRAME_CEILING,
    ZmqPullConfig,
    ZmqPullSource,
    ZmqSubConfig,
    ZmqSubSource,
)

pytestmark = pytest.mark.network


def pusher(context: zmq.asyncio.Context, address: str) -> zmq.asyncio.Socket:
    socket = context.socket(zmq.PUSH)
    socket.connect(address)
    return socket


async def test_pull_receives_what_a_push_sends_multipart_joined(
    context: zmq.asyncio.Context,
) -> None:
    inbox = Inbox()
    async with ZmqPullSource(ZmqPullConfig(bind=ANY_PORT, name="in"), context) as source:
        push = pusher(context, source.endpoint)
        async with running(source.run(inbox)):
            await push.send(b"first line")
            await push.send_multipart([b"a", b"b\nc"])
            assert await inbox.wait_for(2) == [b"first line", b"a\nb\nc"]
        push.close()
    assert {(m.source, m.topic) for m in inbox.messages} == {("in", None)}


async def test_an_oversized_message_is_let_go_and_the_next_one_on_its_connection_arrives(
    context: zmq.asyncio.Context,
) -> None:
    """#11 observation 9: the limit is on the whole message, all its frames together, and a
    message over it no longer costs the sender its connection (and the good message queued
    behind it)."""
    inbox = Inbox()
    config = ZmqPullConfig(bind=ANY_PORT, max_message_bytes=1000)
    async with ZmqPullSource(config, context) as source:
        push = pusher(context, source.endpoint)
        async with running(source.run(inbox)):
            await push.send(b"x" * 1001)  # one frame over the limit
            await push.send(b"good one")
            await push.send_multipart([b"y" * 600] * 100)  # each frame fits, the whole does not
            await push.send(b"good two")
            await inbox.wait_for(4)
        push.close()
    assert [(m.payload, m.received_bytes) for m in inbox.messages] == [
        (b"", 1001),
        (b"good one", None),
        (b"", 60_000),
        (b"good two", None),
    ]


async def test_a_frame_past_the_ceiling_cuts_its_sender_off_and_others_are_served(
    context: zmq.asyncio.Context,
) -> None:
    inbox = Inbox()
    config = ZmqPullConfig(bind=ANY_PORT, max_message_bytes=1000)
    async with ZmqPullSource(config, context) as source:
        big, small = pusher(context, source.endpoint), pusher(context, source.endpoint)
        async with running(source.run(inbox)):
            # Never buffered: libzmq drops this sender's connection (ZMQ_MAXMSGSIZE).
            await big.send(b"x" * (FRAME_CEILING * 1000 + 1))
            await small.send(b"y" * 1000)
            assert await inbox.wait_for(1) == [b"y" * 1000]
        big.close(linger=0)
        small.close()
    assert inbox.payloads == [b"y" * 1000]


async def test_sub_receives_from_every_publisher_with_topic_frames(
    context: zmq.asyncio.Context,
) -> None:
    # XPUB is a PUB that also reports subscriptions, so the test can wait for
    # the SUB to be attached instead of sleeping (PUB drops until then).
    publishers = [context.socket(zmq.XPUB) for _ in range(2)]
    for publisher in publishers:
        publisher.bind(ANY_PORT)
    addresses = tuple(p.getsockopt_string(zmq.LAST_ENDPOINT) for p in publishers)
    inbox = Inbox()
    source = ZmqSubSource(ZmqSubConfig(connect=addresses), context)
    async with source, running(source.run(inbox)):
        for publisher in publishers:
            assert await publisher.recv() == b"\x01"  # subscribed to everything
        await publishers[0].send(b"plain")
        await eventually(lambda: len(inbox.messages) == 1, "the single-frame message")
        await publishers[1].send_multipart([b"app.log", b"l1", b"l2"])
        await inbox.wait_for(2)
    for publisher in publishers:
        publisher.close()
    assert [(m.topic, m.payload) for m in inbox.messages] == [
        (None, b"plain"),
        ("app.log", b"l1\nl2"),
    ]
    assert {m.source for m in inbox.messages} == {"zmq-sub"}


async def test_busy_bind_address_fails_at_open(context: zmq.asyncio.Context) -> None:
    async with ZmqPullSource(ZmqPullConfig(bind=ANY_PORT), context) as first:
        second = ZmqPullSource(ZmqPullConfig(bind=first.endpoint), context)
        with pytest.raises(zmq.ZMQError):
            await second.open()


def test_run_before_open_says_what_to_do() -> None:
    source = ZmqPullSource(ZmqPullConfig())
    with pytest.raises(RuntimeError, match=r"open\(\) the source"):
        source.endpoint  # noqa: B018
