"""The acked side of `streamd send`: a DEALER that keeps a window of unacknowledged lines
and resends them until the daemon has spooled them (wire format: connectors/zmq_acked.py).

A line counts as sent once acknowledged. The daemon acknowledges after an fsync, so
a restart, a SIGKILL or a torn connection costs a resend, never a line: lines go out
again, oldest first, whenever no acknowledgement came for a while (after a reconnect
too), and the daemon drops what it already has. Lines still unacknowledged when no
acknowledgement came for `timeout_s` are reported not sent.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

import zmq

from .send_channel import Outcome
from .send_zmq import connect_watched
from .zmq_acked import new_sender_id, pack_line, unpack_ack
from .zmq_security import CurveClientKeys

WINDOW = 1000  # unacknowledged lines at most: what one restart may have to resend
RESEND_FIRST_S = 1.0  # no acknowledgement for this long: resend the window...
RESEND_MAX_S = 8.0  # ...and again after twice as long each time, up to this
POLL_SLICE_S = 0.1  # how long one wait for acknowledgements lasts at most


class ZmqAcked:
    """A Channel (send_channel.py): outcomes come in line order, a line's once the
    daemon acknowledged it (or gave up on)."""

    def __init__(
        self,
        context: zmq.Context[Any],
        address: str,
        timeout_s: float,
        curve: CurveClientKeys | None = None,
        window: int = WINDOW,
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.window = window
        self.sender = new_sender_id()
        self._wait_s = timeout_s  # how long acknowledgements may stall before giving up
        self._unsent: int | None = None  # the first seq not yet handed to the socket
        self._next_seq = 1
        self._unacked: deque[tuple[int, bytes]] = deque()  # (seq, line), oldest first
        # Line order: each entry a seq awaiting its ack, or a refusal's reason (settled).
        self._order: deque[int | str] = deque()
        self._failed: dict[int, str] = {}  # seqs given up on, and why
        self._acked = 0
        self._progress_at = time.monotonic()
        self._resend_every = RESEND_FIRST_S
        self._sent_at = time.monotonic()
        self.socket = context.socket(zmq.DEALER)
        # Queue only to a connected daemon: lines sent into the void would wait in a pipe
        # and arrive after their own resends.
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.LINGER, 0)  # unacknowledged lines are ours to report
        self.socket.setsockopt(zmq.SNDHWM, window + 1)
        examples = "ipc:///run/streamd/intake.sock or tcp://127.0.0.1:5556 (its --zmq-acked-bind)"
        self._handshakes = connect_watched(self.socket, address, curve, examples)

    # ------------------------------------------------------------ Channel

    def submit(self, payload: bytes) -> list[Outcome]:
        while len(self._unacked) >= self.window:  # a full window waits for acknowledgements
            self._pump(POLL_SLICE_S)
        seq = self._next_seq
        self._next_seq += 1
        self._unacked.append((seq, payload))
        self._order.append(seq)
        if self._unsent is None:
            self._unsent = seq
        self._pump(0)
        return self._settled()

    def refuse(self, reason: str) -> list[Outcome]:
        self._order.append(reason)
        return self._settled()

    def settle_all(self) -> list[Outcome]:
        while self._unacked:
            self._pump(POLL_SLICE_S)
        return self._settled()

    def close(self) -> None:
        self._handshakes.close()
        self.socket.close(linger=0)

    # ------------------------------------------------------------ inside

    def _flush(self) -> None:
        """Send the lines from the first one not yet out, in order, until the socket
        cannot take more (no daemon connected, or its queue full): a later line must not
        overtake an earlier one, or the daemon would wait for the resend of both."""
        if self._unsent is None:
            return
        for seq, payload in self._unacked:
            if seq < self._unsent:
                continue
            floor = self._unacked[0][0]
            header = pack_line(self.sender, seq, floor)
            try:
                self.socket.send_multipart([header, payload], zmq.NOBLOCK)
            except zmq.Again:
                self._unsent = seq
                return
        self._unsent = None

    def _pump(self, wait_s: float) -> None:
        """Send what waits, read acknowledgements (waiting up to wait_s for the first),
        resend when they stall, and give up on the window when they stalled too long."""
        self._flush()
        if self.socket.poll(math.ceil(wait_s * 1000), zmq.POLLIN):
            while self.socket.poll(0, zmq.POLLIN):
                self._on_ack(self.socket.recv())
        now = time.monotonic()
        if not self._unacked:
            self._progress_at = now
            return
        stalled = now - self._progress_at
        connections = self._handshakes.succeeded
        self._handshakes.read_events()
        if connections and self._handshakes.succeeded > connections:
            self._resend_every = RESEND_FIRST_S
            self._resend()  # a reconnect (the daemon restarted): what it lacks goes again now
        elif stalled >= self._wait_s:
            self._give_up()
        elif now - self._sent_at >= self._resend_every and stalled >= self._resend_every:
            self._resend()

    def _on_ack(self, frame: bytes) -> None:
        ack = unpack_ack(frame)
        if ack is None or ack[0] != self.sender or ack[1] <= self._acked:
            return
        self._acked = ack[1]
        while self._unacked and self._unacked[0][0] <= self._acked:
            self._unacked.popleft()
        if self._unsent is not None and self._unsent <= self._acked:
            self._unsent = self._unacked[0][0] if self._unacked else None
        self._progress_at = time.monotonic()
        self._resend_every = RESEND_FIRST_S
        self._wait_s = self.timeout_s

    def _resend(self) -> None:
        """Go-back-N: every unacknowledged line again, oldest first."""
        self._unsent = self._unacked[0][0]
        self._flush()
        self._sent_at = time.monotonic()
        self._resend_every = min(self._resend_every * 2, RESEND_MAX_S)

    def _give_up(self) -> None:
        why = f"the daemon at {self.address} did not acknowledge it within {self.timeout_s}s"
        refusal = self._handshakes.last_failure()
        why = why if refusal is None else f"{why}: {refusal}"
        for seq, _ in self._unacked:
            self._failed[seq] = why
        self._unacked.clear()
        self._unsent = None
        # Until one gets through again, the next lines wait one resend period, not the
        # whole timeout: a file sent to no daemon ends after about one timeout.
        self._wait_s = min(self.timeout_s, RESEND_FIRST_S)
        self._progress_at = time.monotonic()

    def _settled(self) -> list[Outcome]:
        """The outcomes now known, from the front of line order."""
        outcomes: list[Outcome] = []
        while self._order:
            head = self._order[0]
            if isinstance(head, str):
                outcomes.append(head)
            elif head in self._failed:
                outcomes.append(self._failed.pop(head))
            elif head <= self._acked:
                outcomes.append(None)
            else:
                break
            self._order.popleft()
        return outcomes
