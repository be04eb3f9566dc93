"""The control protocol over a real ipc:// ROUTER: good requests, bad ones, overload, shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.asyncio

from streamd.daemon.control import protocol
from streamd.daemon.control.client import ControlClient
from streamd.daemon.control.feed import SummaryFeed
from streamd.daemon.control.protocol import (
    MAX_REQUEST_BYTES,
    ControlError,
    DaemonNotAnswering,
    DaemonUnreachable,
    StillRunning,
    check_args,
)
from streamd.daemon.control.replies import accept
from streamd.daemon.control.server import ControlServer

network = pytest.mark.network


class Daemon:
    """What a service plugs in: a handler with status, a slow command, failures, and a feed."""

    def __init__(self) -> None:
        self.feed = SummaryFeed(keep=4)
        self.release = asyncio.Event()
        self.calls: list[str] = []

    async def handle(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(cmd)
        if cmd == "status":
            check_args(cmd, args, ())
            return {"state": "ready", "cache": {"max_capacity": 1024}}
        if cmd == "summaries":
            return await self.feed.handle(args)
        if cmd == "summarize":  # slow: waits until the test releases it
            await accept({"engine": {"doing": "summarizing", "for_s": 40.0}})  # as handlers.py
            await self.release.wait()
            return {"text": "done"}
        if cmd == "tune":
            return self._tune(args)
        raise AssertionError(cmd)

    @staticmethod
    def _tune(args: dict[str, Any]) -> dict[str, Any]:
        if args.get("fail") == "crash":
            raise RuntimeError("boom")
        if args.get("fail") == "nan":
            return {"x": float("nan")}
        if args.get("fail") == "object":
            return {"x": object()}
        raise ControlError("tune: max_capacity = 2: must be an integer >= 8")


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "control.sock"


@pytest.fixture
def daemon() -> Daemon:
    return Daemon()


@pytest.fixture
async def server(sock_path: Path, daemon: Daemon) -> AsyncIterator[ControlServer]:
    async with ControlServer(sock_path, daemon.handle) as running:
        yield running


def in_thread(
    fn: Callable[[ControlClient], Any], path: Path, timeout_s: float = 2.0
) -> Awaitable[Any]:
    """Run a blocking client call off the loop the server runs on, as the CLI would."""

    def call() -> Any:
        with ControlClient(path, timeout_s) as client:
            return fn(client)

    return asyncio.to_thread(call)


@pytest.fixture
async def raw(
    sock_path: Path, server: ControlServer
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Send arbitrary frames as a DEALER and return the decoded reply (None: no reply)."""
    context = zmq.asyncio.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"ipc://{sock_path}")

    async def send(*frames: bytes, timeout_s: float = 2.0) -> Any:
        await dealer.send_multipart([b"", *frames])
        if not await dealer.poll(int(timeout_s * 1000)):
            return None
        return json.loads((await dealer.recv_multipart())[-1])

    yield send
    dealer.close()
    context.term()


# --- requests that work -------------------------------------------------------------------


@network
async def test_status_round_trip_and_socket_modes(sock_path: Path, server: ControlServer) -> None:
    result = await in_thread(lambda c: c.request("status"), sock_path)
    assert result == {"state": "ready", "cache": {"max_capacity": 1024}}
    assert stat.S_IMODE(sock_path.stat().st_mode) == 0o660
    assert stat.S_IMODE(sock_path.parent.stat().st_mode) == 0o750
    assert await in_thread(lambda c: c.request("ping"), sock_path) == {"pong": True}


@network
async def test_refusals_reach_the_client_in_words(sock_path: Path, server: ControlServer) -> None:
    with pytest.raises(ControlError, match=r"max_capacity = 2: must be an integer >= 8"):
        await in_thread(lambda c: c.request("tune", {"max_capacity": 2}), sock_path)
    with pytest.raises(ControlError, match="status: unknown argument 'verbose'"):
        await in_thread(lambda c: c.request("status", {"verbose": True}), sock_path)


@network
@pytest.mark.parametrize(
    ("fail", "message"),
    [
        ("crash", "internal error in tune: RuntimeError: boom"),
        ("nan", "internal error in tune: ValueError"),
        ("object", "internal error in tune: TypeError"),
    ],
)
async def test_handler_failures_become_error_replies(
    sock_path: Path, server: ControlServer, fail: str, message: str
) -> None:
    with pytest.raises(ControlError, match=message):
        await in_thread(lambda c: c.request("tune", {"fail": fail}), sock_path)
    assert await in_thread(lambda c: c.request("status"), sock_path)  # still serving


# --- requests that do not -----------------------------------------------------------------

BAD_REQUESTS = [
    (b"\xff\xfe", "request is not UTF-8"),
    (b"{nope", "request is not JSON"),
    (b"[1, 2]", "request must be a JSON object"),
    (b'{"cmd": "status"}', "unsupported protocol version v=None; this daemon speaks v=1"),
    (b'{"v": 2, "cmd": "status"}', "unsupported protocol version v=2"),
    (b'{"v": true, "cmd": "status"}', "unsupported protocol version v=True"),
    (b'{"v": 1, "cmd": "reboot"}', "unknown command 'reboot'; commands: ping, status, tune"),
    (b'{"v": 1, "cmd": 5}', "unknown command 5"),
    (b'{"v": 1, "cmd": "status", "sudo": 1}', "unknown request fields: sudo; allowed: v, cmd"),
    (b'{"v": 1, "cmd": "status", "args": []}', "args must be a JSON object"),
    (b'{"v": 1, "cmd": "status", "id": [1]}', "id must be a 64-bit integer or a string"),
    (b'{"v": 1, "cmd": "status", "id": 18446744073709551616}', "id must be a 64-bit integer"),
    (b'{"cmd": "status", "id": ' + b"9" * 5000 + b"}", "request holds a number it cannot read"),
    (b"[" * 50_000 + b"]" * 50_000, "over the 65536-byte limit"),
    (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
    (b'{"v": 1, "cmd": "status", "args": {"x": "' + b"a" * MAX_REQUEST_BYTES + b'"}}', "limit"),
]


@network
@pytest.mark.parametrize(("frame", "message"), BAD_REQUESTS)
async def test_bad_requests_get_error_replies(
    raw: Callable[..., Awaitable[Any]], frame: bytes, message: str
) -> None:
    reply = await raw(frame)
    assert reply["ok"] is False
    assert message in reply["error"]
    assert (await raw(b'{"v": 1, "cmd": "ping", "id": "p"}')) == {
        "v": 1,
        "id": "p",
        "ok": True,
        "result": {"pong": True},
    }


@network
async def test_error_replies_echo_the_id(raw: Callable[..., Awaitable[Any]]) -> None:
    reply = await raw(b'{"v": 1, "cmd": "nope", "id": 41}')
    assert (reply["id"], reply["ok"]) == (41, False)


@network
async def test_multipart_and_giant_frames(raw: Callable[..., Awaitable[Any]]) -> None:
    reply = await raw(b'{"v": 1, "cmd": "ping"}', b"extra")
    assert reply["error"] == "a request is exactly one frame of JSON"
    # Over the hard limit libzmq drops the connection instead of buffering the frame...
    assert await raw(b"x" * (protocol.HARD_FRAME_LIMIT + 1), timeout_s=0.5) is None
    # ...and the server goes on serving everyone, this peer too once it reconnects.
    for _ in range(20):
        if (reply := await raw(b'{"v": 1, "cmd": "ping"}', timeout_s=0.5)) is not None:
            break
    assert reply is not None and reply["ok"]


# --- concurrency, overload, shutdown ------------------------------------------------------


@network
async def test_a_slow_command_does_not_hold_up_others(
    sock_path: Path, server: ControlServer, daemon: Daemon
) -> None:
    slow = in_thread(lambda c: c.request("summarize"), sock_path, timeout_s=5)
    slow_task = asyncio.ensure_future(slow)
    while "summarize" not in daemon.calls:
        await asyncio.sleep(0.01)
    assert await in_thread(lambda c: c.request("status"), sock_path) == {
        "state": "ready",
        "cache": {"max_capacity": 1024},
    }
    daemon.release.set()
    assert await slow_task == {"text": "done"}


@network
async def test_too_many_requests_in_flight_are_refused(sock_path: Path, daemon: Daemon) -> None:
    async with ControlServer(sock_path, daemon.handle, max_in_flight=1):
        slow = asyncio.ensure_future(in_thread(lambda c: c.request("summarize"), sock_path, 5))
        while "summarize" not in daemon.calls:
            await asyncio.sleep(0.01)
        with pytest.raises(ControlError, match="busy: too many requests in flight"):
            await in_thread(lambda c: c.request("status"), sock_path)
        daemon.release.set()
        await slow


@network
async def test_closing_tells_waiting_clients(sock_path: Path, daemon: Daemon) -> None:
    server = ControlServer(sock_path, daemon.handle)
    await server.start()
    slow = asyncio.ensure_future(in_thread(lambda c: c.request("summarize"), sock_path, 5))
    while "summarize" not in daemon.calls:
        await asyncio.sleep(0.01)
    await server.close()
    with pytest.raises(ControlError, match="streamd is stopping"):
        await slow
    assert not sock_path.exists()


# --- the socket path ----------------------------------------------------------------------


@network
async def test_a_second_daemon_on_the_same_path_is_refused(
    sock_path: Path, server: ControlServer, daemon: Daemon
) -> None:
    with pytest.raises(ControlError, match="another streamd answers on"):
        await ControlServer(sock_path, daemon.handle).start()
    assert await in_thread(lambda c: c.request("ping"), sock_path) == {"pong": True}


@network
async def test_a_dead_daemons_socket_file_is_replaced(sock_path: Path, daemon: Daemon) -> None:
    sock_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(sock_path))  # left behind, as after a SIGKILL
    async with ControlServer(sock_path, daemon.handle):
        assert await in_thread(lambda c: c.request("ping"), sock_path) == {"pong": True}


@network
async def test_a_regular_file_in_the_way_is_an_error(sock_path: Path, daemon: Daemon) -> None:
    sock_path.parent.mkdir()
    sock_path.write_text("not a socket")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        await ControlServer(sock_path, daemon.handle).start()


# --- the client ---------------------------------------------------------------------------


def test_no_socket_file_fails_at_once_with_the_hint(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "absent.sock", timeout_s=30)
    with client, pytest.raises(DaemonUnreachable) as caught:
        client.request("status")
    assert str(caught.value) == (
        f"no streamd daemon answering on {tmp_path / 'absent.sock'} "
        "(is it running? see --control-socket / STREAMD_CONTROL_SOCKET)"
    )


@network
def test_a_socket_that_listens_but_never_answers_is_not_called_not_running(
    tmp_path: Path,
) -> None:
    """Issue #11, observation 7: "not running" only when nothing listens."""
    path = tmp_path / "silent.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen()
        with ControlClient(path, timeout_s=0.2) as client, pytest.raises(DaemonNotAnswering) as e:
            client.request("status")
    assert "did not answer within 0.2 s" in str(e.value)
    assert "is it running" not in str(e.value)


def test_a_socket_file_nobody_listens_on_means_not_running(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))  # the file stays; the process that owned it is gone
    with ControlClient(path, timeout_s=0.2) as client, pytest.raises(DaemonUnreachable) as e:
        client.request("status")
    assert "is it running?" in str(e.value)


def test_oversized_request_is_refused_before_sending(tmp_path: Path) -> None:
    client = ControlClient(tmp_path / "x.sock")
    with client, pytest.raises(ControlError, match="request too large"):
        client.request("tune", {"blob": "a" * MAX_REQUEST_BYTES})


@network
async def test_a_late_reply_is_not_taken_for_the_next_one(
    sock_path: Path, server: ControlServer, daemon: Daemon
) -> None:
    def two_requests(client: ControlClient) -> dict[str, Any]:
        notes: list[dict[str, Any]] = []
        # Accepted at once, then no result within the timeout: still running, not gone.
        with pytest.raises(StillRunning) as still:
            client.request("summarize", timeout_s=0.5, on_accepted=notes.append)
        assert (
            notes == [still.value.accepted] == [{"engine": {"doing": "summarizing", "for_s": 40.0}}]
        )
        daemon.release.set()  # its reply now arrives, late
        return client.request("status")

    assert await in_thread(two_requests, sock_path) == {
        "state": "ready",
        "cache": {"max_capacity": 1024},
    }


# --- following summaries ------------------------------------------------------------------


@network
async def test_follow_receives_summaries_as_they_are_published(
    sock_path: Path, server: ControlServer, daemon: Daemon
) -> None:
    daemon.feed.publish({"text": "before"})

    def take_three(client: ControlClient) -> list[str]:
        stream = client.follow(recent=1, wait_s=2)
        return [next(stream)["text"] for _ in range(3)]

    following = asyncio.ensure_future(in_thread(take_three, sock_path))
    while daemon.calls.count("summaries") < 2:  # the first page, then the long poll
        await asyncio.sleep(0.01)
    daemon.feed.publish({"text": "one"})
    await asyncio.sleep(0.05)
    daemon.feed.publish({"text": "two"})
    assert await following == ["before", "one", "two"]
