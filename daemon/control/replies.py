"""The interim "accepted" reply of a command that waits for the engine (tune, summarize).

A `tune` once waited 61 s behind a summary, the client gave up and said no daemon was
running, and the change was applied anyway (issue #11, observation 7). Now the handler
says at once that the request is valid and queued, with what the engine is doing
(accept()); the result follows as a second reply with the same id. The server sets who
sends it for the request it is answering (a context variable: each request runs in a
task of its own), so handlers keep their (cmd, args) signature, and a handler called
without a server (a test) accepts into nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

SendAccepted = Callable[[dict[str, Any]], Awaitable[None]]

_sender: ContextVar[SendAccepted | None] = ContextVar("streamd_send_accepted", default=None)


async def accept(note: dict[str, Any]) -> None:
    """Tell the client now that its request was accepted; `note` says what it waits for."""
    send = _sender.get()
    if send is not None:
        await send(note)


@contextmanager
def accepting(send: SendAccepted) -> Iterator[None]:
    """accept() in this context (the server's task for one request) sends with `send`."""
    token = _sender.set(send)
    try:
        yield
    finally:
        _sender.reset(token)
