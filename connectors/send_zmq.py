"""The ZeroMQ side of `streamd send`: a PUSH socket that queues only to a connected
receiver, and says why a receiver refused the handshake."""

from __future__ import annotations

import math
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from .checks import ConfigError
from .send_channel import Outcome, Patience
from .zmq_security import CurveClientKeys, make_curve_client


class ZmqPush:
    """Sent = queued to a connected receiver: there is no acknowledgement to wait for."""

    def __init__(
        self,
        context: zmq.Context[Any],
        address: str,
        timeout_s: float,
        curve: CurveClientKeys | None = None,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self._patience = Patience(timeout_s)
        self.socket = context.socket(zmq.PUSH)
        # IMMEDIATE: queue only to a connected receiver, so "nobody there" shows
        # up as a send that cannot proceed instead of lines queued into the void.
        # A connection counts once its handshake succeeds: a receiver that
        # refuses our CURVE key (or wants one) takes nothing.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, math.ceil(timeout_s * 1000))
        self._handshakes = connect_watched(
            self.socket, address, curve, "tcp://127.0.0.1:5555 or ipc:///run/streamd/in.sock"
        )

    def submit(self, payload: bytes) -> list[Outcome]:
        outcome = self._send(payload)
        self._patience.saw(outcome is None)
        return [outcome]

    def _send(self, payload: bytes) -> Outcome:
        if self.socket.poll(math.ceil(self._patience.wait_s * 1000), zmq.POLLOUT):
            try:
                self.socket.send(payload, zmq.NOBLOCK)
                return None
            except zmq.Again:
                pass  # the receiver went between poll and send
        why = f"no receiver at {self.address} took the line within {self.timeout_s}s"
        refusal = self._handshakes.last_failure()
        return why if refusal is None else f"{why}: {refusal}"

    def refuse(self, reason: str) -> list[Outcome]:
        return [reason]

    def settle_all(self) -> list[Outcome]:
        return []

    def close(self) -> None:
        self._handshakes.close()
        self.socket.close()  # linger: up to timeout_s for queued lines to leave


def connect_watched(
    socket: zmq.Socket[Any], address: str, curve: CurveClientKeys | None, examples: str
) -> HandshakeWatch:
    """CURVE if asked, a watch on the handshakes, then connect; an address that cannot
    work (tcp://host without a port) is a ConfigError naming it, with `examples`."""
    if curve is not None:
        make_curve_client(socket, curve)
    handshakes = HandshakeWatch(socket, curve is not None)
    try:
        socket.connect(address)
    except zmq.ZMQError as error:  # nothing to try
        handshakes.close()
        socket.close(linger=0)
        why = zmq.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(
            f"send address = {address!r}: cannot connect ({why}); give e.g. {examples}"
        ) from None
    return handshakes


class HandshakeWatch:
    """Why the receiver would not take our lines, from the socket's monitor events: it
    refused our CURVE key, wants CURVE (or does not speak it), or the handshake failed."""

    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )
    # The options that `streamd send` takes for CURVE, named in the advice below.
    KEY_OPTIONS = "--curve-secret-key, --curve-server-key"

    def __init__(self, socket: zmq.Socket[Any], curve: bool) -> None:
        self._socket = socket
        self._curve = curve
        # A connection torn mid-handshake (the receiver hung up first) says no more.
        self._generic = (
            "the handshake failed; is --curve-server-key the receiver's public key?"
            if curve
            else "the handshake failed; if the receiver requires CURVE, give our key pair "
            f"and its public key ({self.KEY_OPTIONS})"
        )
        self._monitor: zmq.Socket[Any] | None = socket.get_monitor_socket(self.EVENTS)
        self._failure: str | None = None
        self.succeeded = 0  # handshakes that succeeded: more than one is a reconnect

    def last_failure(self) -> str | None:
        """Why handshakes fail, in words; None if none failed since one succeeded."""
        self.read_events()
        return self._failure

    def read_events(self) -> None:
        """Take in the monitor's events: failures, and connections made (`succeeded`)."""
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._failure = None
                self.succeeded += 1
                continue
            why = self._describe(event["event"], event["value"])
            # Of the retries, one torn mid-handshake says less than a refusal: keep that.
            if why != self._generic or self._failure is None:
                self._failure = why

    def _describe(self, event: int, value: int) -> str:
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            why = f"it refused our CURVE key (ZAP status {value})"
            return f"{why}: add our public key to its authorized keys"
        if (
            event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            if self._curve:
                return "it does not use CURVE: send without CURVE keys"
            return f"it requires CURVE: give our key pair and its public key ({self.KEY_OPTIONS})"
        return self._generic

    def close(self) -> None:
        if self._monitor is not None:
            self._socket.disable_monitor()
            self._monitor.close(linger=0)
            self._monitor = None
