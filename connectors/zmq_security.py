"""CURVE for streamd's ZeroMQ sockets: key files, socket options, and who may connect.

A bound socket is a CURVE server (RFC 26) with the daemon's key pair; which client keys may
connect is asked of `ZapAuthenticator`, the context's ZAP handler (RFC 27), which lets in
only the authorized public keys. With no handler running, every handshake fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import zmq
import zmq.asyncio
import zmq.auth
from zmq.utils import z85

from .checks import ConfigError, require
from .lifecycle import OpenClose
from .zmq_common import shared_context

log = structlog.get_logger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # fixed by RFC 27: libzmq asks whoever binds it
ZAP_DOMAIN = b"streamd"  # our servers' domain; a request for another is refused
ZAP_VERSION = b"1.0"
Z85_KEY_CHARS = 40  # a 32-byte key in Z85
# Denied keys are logged once each, and only this many: a client that cycles
# through keys must not fill the log (the count of denials still goes up).
MAX_REPORTED_KEYS = 100
HOW_TO_MAKE_KEYS = (
    "make one with: python -c \"import zmq.auth; zmq.auth.create_certificates('.', 'NAME')\""
)


@dataclass(frozen=True)
class CurveKeyPair:
    """A Z85 key pair (40 characters each), as read from a NAME.key_secret file."""

    public: bytes
    secret: bytes = field(repr=False)  # never in logs, reprs or status


@dataclass(frozen=True)
class CurveClientKeys:
    """What a CURVE client needs: its own pair, and the public key of the server it trusts."""

    own: CurveKeyPair
    server_public: bytes


# --- key files --------------------------------------------------------------------------------


def load_key_pair(setting: str, path: str | os.PathLike[str]) -> CurveKeyPair:
    """The pair in a NAME.key_secret file; ConfigError (naming `setting` and the file) if the
    file is missing, unreadable, holds no secret key, or its two keys do not belong together."""
    public, secret = _read_key_file(setting, path)
    fix = f"give the NAME.key_secret file of a key pair; {HOW_TO_MAKE_KEYS}"
    if secret is None:
        raise ConfigError(f"{setting} = {str(path)!r}: holds no secret key; {fix}")
    _require_key(setting, path, secret, "secret-key", fix)
    require(
        zmq.curve_public(secret) == public,
        f"{setting} = {str(path)!r}: its public key does not belong to its secret key; {fix}",
    )
    return CurveKeyPair(public, secret)


def load_public_key(setting: str, path: str | os.PathLike[str]) -> bytes:
    """The public key in a NAME.key file (a NAME.key_secret file is read for its public key)."""
    public, _ = _read_key_file(setting, path)
    return public


def load_authorized_keys(setting: str, directory: str | os.PathLike[str]) -> frozenset[bytes]:
    """The public keys of every *.key file in `directory` (czmq's layout), each checked."""
    folder = Path(directory)
    require(
        folder.is_dir(),
        f"{setting} = {str(folder)!r}: not a directory; give the folder that holds the "
        "clients' public NAME.key files",
    )
    keys = frozenset(load_public_key(setting, path) for path in sorted(folder.glob("*.key")))
    require(
        bool(keys),
        f"{setting} = {str(folder)!r}: holds no .key files, so no client could connect; "
        "copy each sender's public NAME.key file there",
    )
    return keys


def _read_key_file(setting: str, path: str | os.PathLike[str]) -> tuple[bytes, bytes | None]:
    where = f"{setting} = {str(path)!r}"
    try:
        with open(path, "rb"):  # the error names what is wrong: missing, a folder, no access
            pass
        public, secret = zmq.auth.load_certificate(path)
    except OSError as error:
        raise ConfigError(f"{where}: cannot be read ({error.strerror or error})") from None
    except ValueError:
        raise ConfigError(
            f"{where}: no public-key line; give a key file; {HOW_TO_MAKE_KEYS}"
        ) from None
    _require_key(setting, path, public, "public-key", f"the file is damaged; {HOW_TO_MAKE_KEYS}")
    return public, secret


def _require_key(
    setting: str, path: str | os.PathLike[str], key: bytes, what: str, fix: str
) -> None:
    """A Z85 key is 40 characters that decode to 32 bytes."""
    try:
        ok = len(key) == Z85_KEY_CHARS and len(z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError):
        ok = False
    require(ok, f"{setting} = {str(path)!r}: its {what} is not a 40-character Z85 key; {fix}")


# --- socket options ---------------------------------------------------------------------------


def make_curve_server(socket: zmq.Socket[Any], keys: CurveKeyPair) -> None:
    """Before bind: CURVE only, clients vetted by the ZAP handler (see the module docstring)."""
    socket.setsockopt(zmq.CURVE_SERVER, 1)
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
    # Fail closed: while no authenticator listens, every handshake fails, where libzmq's
    # default would let every client with any key in.
    socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)


def make_curve_client(socket: zmq.Socket[Any], keys: CurveClientKeys) -> None:
    """Before connect: prove our key, and talk only to the server holding `server_public`'s pair."""
    socket.setsockopt(zmq.CURVE_PUBLICKEY, keys.own.public)
    socket.setsockopt(zmq.CURVE_SECRETKEY, keys.own.secret)
    socket.setsockopt(zmq.CURVE_SERVERKEY, keys.server_public)


# --- who may connect --------------------------------------------------------------------------


class ZapAuthenticator(OpenClose):
    """The context's ZAP handler: lets in CURVE clients whose public key is authorized.

    Only one may run per ZeroMQ context (it binds the fixed ZAP endpoint), and
    it must be open before a server socket takes connections. `allowed` and
    `denied` count handshakes; each denied key is logged once, at warning.
    """

    def __init__(
        self, authorized: frozenset[bytes], context: zmq.asyncio.Context | None = None
    ) -> None:
        self.authorized = authorized
        self.allowed = 0
        self.denied = 0
        self._context = shared_context(context)
        self._reported: set[bytes] = set()
        self._socket: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        socket = self._context.socket(zmq.REP)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError:
            socket.close()
            raise
        self._socket = socket
        self._task = asyncio.create_task(self._serve(socket), name="zap authenticator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def _serve(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            request: list[bytes] = await socket.recv_multipart()
            # REP: every request gets a reply, a malformed one too, or the socket stalls.
            await socket.send_multipart(self.answer(request))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply to one request: [version, request id, status, text, user id, metadata]."""
        request_id = request[1] if len(request) > 1 else b""
        if len(request) < 6 or request[0] != ZAP_VERSION:
            return _reply(request_id, b"400", b"malformed ZAP request")
        domain, address, mechanism, credentials = request[2], request[3], request[5], request[6:]
        if domain != ZAP_DOMAIN or mechanism != b"CURVE" or len(credentials) != 1:
            return self._deny(request_id, address, None, b"CURVE clients only")
        key = z85.encode(credentials[0])
        if key not in self.authorized:
            return self._deny(request_id, address, key, b"key not authorized")
        self.allowed += 1
        return _reply(request_id, b"200", b"OK", user_id=key)

    def _deny(
        self, request_id: bytes, address: bytes, key: bytes | None, why: bytes
    ) -> list[bytes]:
        self.denied += 1
        label = key or b""
        if label not in self._reported and len(self._reported) < MAX_REPORTED_KEYS:
            self._reported.add(label)
            log.warning(
                "zmq connection refused",
                reason=why.decode(),
                peer=address.decode(errors="replace"),
                client_key=key.decode() if key else None,  # a public key: safe to show
            )
        return _reply(request_id, b"400", why)


def _reply(request_id: bytes, status: bytes, text: bytes, user_id: bytes = b"") -> list[bytes]:
    return [ZAP_VERSION, request_id, status, text, user_id, b""]
