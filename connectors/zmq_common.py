"""What every streamd ZeroMQ socket shares: the context, limits and a short linger."""

from __future__ import annotations

from typing import Any

import zmq
import zmq.asyncio

# On close, queued outgoing frames get this long to leave: shutdown must finish
# well inside systemd's stop timeout even when a peer has gone away.
LINGER_MS = 200


def shared_context(context: zmq.asyncio.Context | None) -> zmq.asyncio.Context:
    # One context (one I/O thread) per process is ZeroMQ's intended use; the
    # instance is never terminated, so its sockets are what we close.
    return context if context is not None else zmq.asyncio.Context.instance()


def limit_socket(socket: zmq.Socket[Any], max_message_bytes: int | None, hwm: int) -> None:
    """Bound what one socket may hold: message size (inbound) and queued messages."""
    socket.setsockopt(zmq.LINGER, LINGER_MS)
    socket.setsockopt(zmq.SNDHWM, hwm)
    socket.setsockopt(zmq.RCVHWM, hwm)
    if max_message_bytes is not None:
        # libzmq drops the connection of a peer that sends a larger frame, so
        # a 10 MB blob is never buffered; the decoder checks the whole message.
        socket.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)


def bound_endpoint(socket: zmq.Socket[Any]) -> str:
    """The address a bind ended on (tcp://127.0.0.1:* binds pick a free port)."""
    return socket.getsockopt_string(zmq.LAST_ENDPOINT)
