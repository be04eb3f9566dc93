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
