"""ZeroMQ PULL and SUB sources against real PUSH / PUB sockets on loopback."""

from __future__ import annotations

import pytest
import zmq
import zmq.asyncio
from connector_testing import ANY_PORT, Inbox, eventually, running

from streamd.connectors.zmq_sources import ZmqPullConfig, ZmqPullSource, ZmqSubConfig, ZmqSubSource

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


async def test_pull_drops_oversized_frames_and_keeps_serving(context: zmq.asyncio.Context) -> None:
    inbox = Inbox()
    config = ZmqPullConfig(bind=ANY_PORT, max_message_bytes=1000)
    async with ZmqPullSource(config, context) as source:
        big, small = pusher(context, source.endpoint), pusher(context, source.endpoint)
        async with running(source.run(inbox)):
            await big.send(b"x" * 1001)  # libzmq cuts this sender off (ZMQ_MAXMSGSIZE)
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
