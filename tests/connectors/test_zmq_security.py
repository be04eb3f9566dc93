"""CURVE on real ZeroMQ sockets: key files, the ZAP authenticator, and who gets through.

Every socket here is real (loopback TCP); the senders are `send_lines_zmq`, as
`streamd send` runs it, on its own context like a separate process would be.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from connector_testing import ANY_PORT, Inbox, eventually, running
from zmq.utils.monitor import recv_monitor_message

from streamd.connectors.checks import ConfigError
from streamd.connectors.outputs import ZmqPubSink
from streamd.connectors.sender import SendReport, send_lines_zmq
from streamd.connectors.zmq_security import (
    ZAP_DOMAIN,
    CurveClientKeys,
    CurveKeyPair,
    ZapAuthenticator,
    load_authorized_keys,
    load_key_pair,
    load_public_key,
    make_curve_client,
    make_curve_server,
)
from streamd.connectors.zmq_sources import ZmqPullConfig, ZmqPullSource, ZmqSubConfig, ZmqSubSource
from streamd.daemon.tools.testing import WAIT_S

pytestmark = pytest.mark.network
# A refused send waits this long for a receiver; the handshake fails in milliseconds.
REFUSED_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Keys:
    folder: Path
    server: CurveKeyPair  # the daemon's pair
    friend: CurveKeyPair  # authorized
    stranger: CurveKeyPair  # a valid pair nobody authorized
    authorized_dir: Path  # holds friend.key only

    def client(self, pair: CurveKeyPair, server_public: bytes | None = None) -> CurveClientKeys:
        return CurveClientKeys(pair, server_public or self.server.public)


def make_pair(folder: Path, name: str) -> CurveKeyPair:
    _, secret_file = zmq.auth.create_certificates(folder, name)
    return load_key_pair("test", secret_file)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    pairs = {name: make_pair(tmp_path, name) for name in ("server", "friend", "stranger")}
    authorized = tmp_path / "authorized"
    authorized.mkdir()
    (authorized / "friend.key").write_bytes((tmp_path / "friend.key").read_bytes())
    return Keys(tmp_path, pairs["server"], pairs["friend"], pairs["stranger"], authorized)


async def send(
    address: str, lines: list[bytes], curve: CurveClientKeys | None, timeout_s: float
) -> SendReport:
    """`streamd send` of `lines`, on a thread: it blocks, and the source runs on this loop."""
    return await asyncio.to_thread(send_lines_zmq, lines, address, timeout_s, curve=curve)


# --- key files -------------------------------------------------------------------------------


def test_key_files_load_as_written_by_zmq_auth(keys: Keys) -> None:
    pair = load_key_pair("s", keys.folder / "server.key_secret")
    assert pair == keys.server and len(pair.public) == 40
    assert load_public_key("s", keys.folder / "server.key") == keys.server.public
    assert load_authorized_keys("s", keys.authorized_dir) == {keys.friend.public}
    assert keys.server.secret.decode() not in repr(pair)  # a repr never shows the secret


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("make", "load", "problem"),
    [
        (lambda k: k.folder / "missing.key_secret", load_key_pair, "cannot be read (No such file"),
        (lambda k: k.folder / "server.key", load_key_pair, "holds no secret key"),
        (lambda k: write(k.folder / "x.key", "hello\n"), load_public_key, "no public-key line"),
        (
            lambda k: write(k.folder / "short.key", 'curve\n    public-key = "abc"\n'),
            load_public_key,
            "its public-key is not a 40-character Z85 key",
        ),
        (
            lambda k: write(
                k.folder / "mixed.key_secret",
                f'curve\n    public-key = "{k.friend.public.decode()}"\n'
                f'    secret-key = "{k.server.secret.decode()}"\n',
            ),
            load_key_pair,
            "its public key does not belong to its secret key",
        ),
        (lambda k: k.folder, load_key_pair, "cannot be read"),
    ],
    ids=["missing", "public-only", "not-a-key-file", "damaged", "mismatched", "a-folder"],
)
def test_a_bad_key_file_is_named_with_what_is_wrong(
    keys: Keys, make: Callable[[Keys], Path], load: Callable[[str, Path], object], problem: str
) -> None:
    path = make(keys)
    with pytest.raises(ConfigError) as error:
        load("security.zmq_curve_secret_key_file", path)
    message = str(error.value)
    assert message.startswith(f"security.zmq_curve_secret_key_file = {str(path)!r}: ")
    assert problem in message


def test_an_authorized_keys_folder_must_exist_and_hold_keys(keys: Keys, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=r"holds no \.key files, so no client could connect"):
        load_authorized_keys("d", empty)
    with pytest.raises(ConfigError, match="not a directory"):
        load_authorized_keys("d", keys.folder / "server.key")
    write(keys.authorized_dir / "broken.key", "nothing here\n")
    with pytest.raises(ConfigError, match=r"broken\.key': no public-key line"):
        load_authorized_keys("d", keys.authorized_dir)


# --- the ZAP handler's answers ------------------------------------------------------------------


def test_zap_answers_by_key_domain_and_mechanism(keys: Keys) -> None:
    authenticator = ZapAuthenticator(frozenset({keys.friend.public}))
    raw_friend = zmq.utils.z85.decode(keys.friend.public)
    raw_stranger = zmq.utils.z85.decode(keys.stranger.public)

    def status(*request: bytes) -> tuple[bytes, bytes]:
        reply = authenticator.answer(list(request))
        return reply[1], reply[2]  # request id, status code

    head = [b"1.0", b"id7", ZAP_DOMAIN, b"10.0.0.9", b""]
    assert status(*head, b"CURVE", raw_friend) == (b"id7", b"200")
    assert status(*head, b"CURVE", raw_stranger) == (b"id7", b"400")
    assert status(*head, b"NULL") == (b"id7", b"400")  # no key: no entry
    assert status(b"1.0", b"id7", b"other", b"", b"", b"CURVE", raw_friend)[1] == b"400"
    assert status(b"2.0", b"id8", *head[2:], b"CURVE", raw_friend) == (b"id8", b"400")
    assert status(b"1.0") == (b"", b"400")  # malformed: still answered, or REP would stall
    assert (authenticator.allowed, authenticator.denied) == (1, 3)  # malformed: not a client


# --- PULL: only authorized senders get lines in ---------------------------------------------


async def test_curve_pull_takes_lines_from_authorized_senders_only(
    keys: Keys, context: zmq.asyncio.Context
) -> None:
    inbox = Inbox()
    config = ZmqPullConfig(bind="tcp://0.0.0.0:*", curve=keys.server)
    authenticator = ZapAuthenticator(frozenset({keys.friend.public}), context)
    async with authenticator, ZmqPullSource(config, context) as source:
        address = source.endpoint.replace("0.0.0.0", "127.0.0.1")
        async with running(source.run(inbox)):
            friend = await send(address, [b"hello", b"again"], keys.client(keys.friend), 5.0)
            assert friend == SendReport(sent=2, unsent=0, skipped=0)
            await inbox.wait_for(2)

            stranger, plain, wrong_server = await asyncio.gather(
                send(address, [b"stranger"], keys.client(keys.stranger), REFUSED_TIMEOUT_S),
                send(address, [b"plain"], None, REFUSED_TIMEOUT_S),
                send(
                    address,
                    [b"wrong server key"],
                    keys.client(keys.friend, server_public=keys.stranger.public),
                    REFUSED_TIMEOUT_S,
                ),
            )
            # The friend is still let in after the refusals; its line marks the end.
            assert (await send(address, [b"last"], keys.client(keys.friend), 5.0)).ok
            await inbox.wait_for(3)
    assert inbox.payloads == [b"hello", b"again", b"last"]
    assert (stranger.sent, plain.sent, wrong_server.sent) == (0, 0, 0)
    assert "it refused our CURVE key (ZAP status 400)" in (stranger.reason or "")
    # "it requires CURVE", or if it hung up mid-handshake, the same advice less sure of itself.
    assert "give our key pair and its public key (--curve-secret-key" in (plain.reason or "")
    assert "the handshake failed" in (wrong_server.reason or "")
    assert authenticator.allowed >= 2 and authenticator.denied >= 1


async def test_a_curve_server_without_an_authenticator_lets_nobody_in(
    keys: Keys, context: zmq.asyncio.Context
) -> None:
    """Fail closed: with no ZAP handler listening, libzmq would let any key in."""
    inbox = Inbox()
    config = ZmqPullConfig(bind=ANY_PORT, curve=keys.server)
    async with ZmqPullSource(config, context) as source, running(source.run(inbox)):
        report = await send(source.endpoint, [b"x"], keys.client(keys.friend), REFUSED_TIMEOUT_S)
    assert (report.sent, report.unsent) == (0, 1)
    assert inbox.messages == []


# --- PUB and SUB -------------------------------------------------------------------------------


async def test_curve_pub_sends_summaries_to_authorized_subscribers_only(
    keys: Keys, context: zmq.asyncio.Context
) -> None:
    sync = zmq.Context()
    friend, stranger = sync.socket(zmq.SUB), sync.socket(zmq.SUB)
    make_curve_client(friend, keys.client(keys.friend))
    make_curve_client(stranger, keys.client(keys.stranger))
    monitor = stranger.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH)
    try:
        authenticator = ZapAuthenticator(frozenset({keys.friend.public}), context)
        async with authenticator, ZmqPubSink(ANY_PORT, context=context, curve=keys.server) as sink:
            for sub in (friend, stranger):
                sub.setsockopt(zmq.SUBSCRIBE, b"")
                sub.connect(sink.endpoint)

            async def friend_got_one() -> bytes:
                while True:  # a new subscriber misses what came before it: publish again
                    await sink.emit({"seq": 1})
                    await asyncio.sleep(0.05)  # the loop runs the ZAP handler meanwhile
                    if friend.poll(0):
                        return bytes(friend.recv())

            assert json.loads(await asyncio.wait_for(friend_got_one(), WAIT_S)) == {"seq": 1}
            # The monitor reports nothing but refused handshakes (ZAP said no).
            await eventually(lambda: monitor.poll(0) != 0, "the stranger's handshake refused")
            assert recv_monitor_message(monitor)["value"] == 400
            await sink.emit({"seq": 2})
            await eventually(lambda: friend.poll(0) != 0, "the second record")
            assert json.loads(friend.recv()) == {"seq": 2}
        assert stranger.poll(0) == 0  # refused: it never had a connection to receive on
    finally:
        stranger.disable_monitor()
        for socket in (friend, stranger, monitor):
            socket.close(linger=0)
        sync.term()


async def test_curve_sub_connects_to_a_curve_publisher(
    keys: Keys, context: zmq.asyncio.Context
) -> None:
    """The daemon's SUB source as a CURVE client; the publisher vets the daemon's key."""
    publisher_context = zmq.asyncio.Context()  # another process, as far as ZAP is concerned
    publisher_keys = make_pair(keys.folder, "publisher")
    publisher = publisher_context.socket(zmq.PUB)
    make_curve_server(publisher, publisher_keys)
    inbox = Inbox()
    try:
        async with ZapAuthenticator(frozenset({keys.server.public}), publisher_context):
            port = publisher.bind_to_random_port("tcp://127.0.0.1")
            curve = CurveClientKeys(keys.server, publisher_keys.public)
            config = ZmqSubConfig(connect=(f"tcp://127.0.0.1:{port}",), curve=curve)
            source = ZmqSubSource(config, context)
            async with source, running(source.run(inbox)):

                async def published_and_seen() -> None:
                    while not inbox.messages:  # PUB drops until the subscription lands
                        await publisher.send_multipart([b"logs", b"a line"])
                        await asyncio.sleep(0.05)

                await asyncio.wait_for(published_and_seen(), WAIT_S)
    finally:
        publisher.close(linger=0)
        publisher_context.destroy(linger=0)
    assert (inbox.messages[0].topic, inbox.messages[0].payload) == ("logs", b"a line")
