"""Helpers for the connector tests: wait-until loops, a collecting deliver, test certificates."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamd.connectors.messages import RawMessage

DEFAULT_TIMEOUT_S = 5.0
ANY_PORT = "tcp://127.0.0.1:*"  # a ZeroMQ bind on a loopback port the OS picks


async def eventually(
    predicate: Callable[[], bool], what: str, timeout_s: float = DEFAULT_TIMEOUT_S
) -> None:
    """Poll `predicate` until true; fail naming `what` after `timeout_s`."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


class Inbox:
    """A source's deliver callback that keeps what it gets."""

    def __init__(self) -> None:
        self.messages: list[RawMessage] = []

    async def __call__(self, message: RawMessage) -> None:
        self.messages.append(message)

    @property
    def payloads(self) -> list[bytes]:
        return [message.payload for message in self.messages]

    async def wait_for(self, count: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[bytes]:
        await eventually(lambda: len(self.messages) >= count, f"{count} messages", timeout_s)
        return self.payloads


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run `coro` as a task for the block; cancel it after (its own errors still surface)."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # the test CA: signs the broker's and the client's certificates
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(name: str, subject: str, extension: str, cwd: Path) -> None:
    """A P-256 key and a certificate for it, signed by the test CA."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=cwd)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=cwd)
    (cwd / f"{name}.ext").write_text(extension)
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
        cwd=cwd,
    )  # fmt: skip


def make_tls_files(cwd: Path) -> TlsFiles:
    """Writes a test CA, a server certificate for 127.0.0.1 and a client certificate into cwd."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=streamd test CA",
        cwd=cwd,
    )  # fmt: skip
    _issue("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\n", cwd)
    _issue("client", "/CN=streamd-client", "extendedKeyUsage=clientAuth\n", cwd)
    return TlsFiles(
        cwd / "ca.pem",
        cwd / "server.pem",
        cwd / "server.key",
        cwd / "client.pem",
        cwd / "client.key",
    )


class SlowLink:
    """A real TCP relay on a free loopback port to `host:port` that holds every
    chunk `delay_s` before passing it on, both ways: a long link, for a broker
    on loopback. While `silent` is true (set it from any thread) chunks are
    dropped, not passed on: a link gone quiet, its TCP connection still up."""

    host = "127.0.0.1"

    def __init__(self, host: str, port: int, delay_s: float = 0.0) -> None:
        self._target = (host, port)
        self._delay_s = delay_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0
        self.silent = False
        self.bytes_to_client = 0  # passed on from the target to the client

    async def __aenter__(self) -> SlowLink:
        self._server = await asyncio.start_server(self._relay, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._target)
        self._writers += [writer, up_writer]
        for source, sink, to_client in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(source, sink, to_client))
            self._tasks.add(task)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, to_client: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def pass_on() -> None:
            while True:
                due, data = await held.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:  # the sender closed its side
                    writer.close()
                    return
                if self.silent:
                    continue
                writer.write(data)
                await writer.drain()
                self.bytes_to_client += len(data) if to_client else 0

        passing = asyncio.create_task(pass_on())
        self._tasks.add(passing)
        while data := await reader.read(65536):
            held.put_nowait((loop.time() + self._delay_s, data))
        held.put_nowait((loop.time() + self._delay_s, b""))
