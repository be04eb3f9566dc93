"""The soak's senders: threads that offer the mix at a steady rate and count what they SENT.

Sent means the other side took responsibility for it (ZeroMQ: the daemon acknowledged it,
spooled; MQTT: a QoS 1 publish the broker acknowledged). A message that could
not go out is not counted, so sent is what the daemon must account for.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from typing import Any

import paho.mqtt.client as paho
import zmq
from paho.mqtt.enums import CallbackAPIVersion

from streamd.connectors.send_acked import ZmqAcked
from streamd.connectors.send_channel import Outcome

from .payloads import Kind, Mix, spoil

POLL_MS = 100  # how often a blocked send looks up to see whether it was paused
PAUSE_TIMEOUT_S = 30.0  # a sender that cannot stop between two messages is stuck
# QoS 1 publishes awaiting the broker's acknowledgement, per publisher: enough to
# hide the round trip, few enough that a broker restart leaves a small resend.
MAX_UNACKED = 200
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 2  # the publishers' retry while the broker is down


class SenderStuck(RuntimeError):
    """A sender failed, did not pause, or its broker never acknowledged; the message says
    which."""


class Sender(threading.Thread):
    """Offers `rate` messages a second from a Mix, and a blob at each time in blob_times
    (seconds after start()). Subclasses say how one message goes out."""

    source = ""  # the daemon's name for the source this sender feeds

    def __init__(
        self, name: str, mix: Mix, rate: float, blob_times: list[float], blob_bytes: int
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.mix = mix
        self.rate = rate
        self.blob_times = deque(sorted(blob_times))
        self.blob_bytes = blob_bytes
        self.sent: Counter[Kind] = Counter()  # by kind; read under _lock
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._go = threading.Event()
        self._idle = threading.Event()
        self._stopping = threading.Event()
        self._go.set()

    # ------------------------------------------------------------ control

    # The runner pauses every sender before it reads counters it wants exact (a daemon
    # SIGKILL, the end): pause() returns once the thread is between two messages.
    def pause(self) -> None:
        self._idle.clear()
        self._go.clear()
        if not self._idle.wait(PAUSE_TIMEOUT_S) and self.is_alive():
            raise SenderStuck(f"{self.name} did not pause within {PAUSE_TIMEOUT_S}s")

    def resume(self) -> None:
        self._go.set()

    def stop(self) -> None:
        self._stopping.set()
        self._go.set()
        if self.is_alive():  # never started, if the soak failed while making senders
            self.join(PAUSE_TIMEOUT_S)
        self.close()

    def sent_by_kind(self) -> dict[str, int]:
        with self._lock:
            return {str(kind): count for kind, count in self.sent.items()}

    def _count(self, kind: Kind) -> None:
        with self._lock:
            self.sent[kind] += 1

    @property
    def _interrupted(self) -> bool:
        """A message being tried should be given up (and not counted)."""
        return self._stopping.is_set() or not self._go.is_set()

    # --------------------------------------------------------------- loop

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # the runner reports it; the thread must not vanish
            self.error = error
            self._idle.set()

    def _loop(self) -> None:
        started = next_at = time.monotonic()
        while not self._stopping.is_set():
            if not self._go.is_set():
                self._idle.set()
                self._go.wait()
                next_at = time.monotonic()  # no burst to catch up after a pause
                continue
            if self.blob_times and time.monotonic() - started >= self.blob_times[0]:
                self.blob_times.popleft()
                self._offer(Kind.BLOB, spoil(Kind.BLOB, b"", self.blob_bytes))
            else:
                self._offer(*self.mix.next())
            next_at += 1.0 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))

    def _offer(self, kind: Kind, payload: bytes) -> None:
        raise NotImplementedError

    def wait_acked(self, timeout_s: float) -> None:
        """Once paused: until what was offered is taken (sent) or known lost; SenderStuck
        if it is not taken within timeout_s."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sockets and clients (after the thread has ended)."""


class ZmqSender(Sender):
    """`streamd send`'s acknowledged delivery (connectors/send_acked.py) to the daemon's
    acked intake: a message counts as sent once the daemon acknowledged it (it is spooled),
    and the unacknowledged window is resent after a daemon restart. No blobs: the acked
    intake's frame limit would tear the connection the window shares (the frame limits have
    tests of their own)."""

    source = "zmq-acked"

    def __init__(
        self, name: str, context: zmq.Context[Any], address: str, timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(name, **kwargs)
        self.channel = ZmqAcked(context, address, timeout_s)
        self._kinds: deque[Kind] = deque()  # of the messages awaiting an outcome, in order
        self.given_up: list[str] = []  # why, for each message the channel gave up on

    def _offer(self, kind: Kind, payload: bytes) -> None:
        self._kinds.append(kind)
        self._settle(self.channel.submit(payload))

    def _settle(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            kind = self._kinds.popleft()
            if outcome is None:
                self._count(kind)
            else:
                self.given_up.append(outcome)

    # Before exact counts, with the thread paused: until the daemon acknowledged every
    # message (the channel gives up after its own timeout without an acknowledgement).
    def wait_acked(self, _timeout_s: float) -> None:
        self._settle(self.channel.settle_all())
        if self.given_up:
            why = f"{self.name}: {len(self.given_up)} messages never acknowledged"
            raise SenderStuck(f"{why}: {self.given_up[0]}")

    def close(self) -> None:
        self.channel.close()


class MqttSender(Sender):
    """A paho client publishing QoS 1 to its own topic; paho reconnects on its own thread
    and resends unacknowledged publishes, so a broker restart only delays them.

    Acknowledgements are matched by message id: paho's MQTTMessageInfo keeps the
    error of the first attempt (not connected) even once a resend went through.
    """

    source = "mqtt"

    def __init__(self, name: str, host: str, port: int, topic: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.topic = topic
        self._unacked: dict[int, Kind] = {}  # message id -> kind; under _unacked_lock
        self._unacked_lock = threading.Lock()
        # Filled on paho's thread without our lock: paho holds its own lock around the
        # callback and around publish(), and we hold ours around publish().
        self._acked: deque[int] = deque()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=name)
        self.client.on_publish = self._on_publish
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.client.connect_async(host, port)
        self.client.loop_start()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, *_: Any) -> None:
        self._acked.append(mid)

    def _offer(self, kind: Kind, payload: bytes) -> None:
        while self.unacked >= MAX_UNACKED:
            if self._interrupted:
                return
            time.sleep(POLL_MS / 1000)
        with self._unacked_lock:  # so the id is recorded before its acknowledgement is read
            info = self.client.publish(self.topic, payload, qos=1)
            # NO_CONN: paho keeps it and publishes it on reconnecting.
            if info.rc in (paho.MQTT_ERR_SUCCESS, paho.MQTT_ERR_NO_CONN):
                self._unacked[info.mid] = kind

    @property
    def unacked(self) -> int:
        """Publishes the broker has not acknowledged yet."""
        self._collect_acks()
        with self._unacked_lock:
            return len(self._unacked)

    def sent_by_kind(self) -> dict[str, int]:
        self._collect_acks()
        return super().sent_by_kind()

    def _collect_acks(self) -> None:
        """Count the acknowledged publishes as sent."""
        with self._unacked_lock:
            while self._acked:
                kind = self._unacked.pop(self._acked.popleft(), None)
                if kind is not None:
                    self._count(kind)

    # Before exact counts: returns once the broker has acknowledged everything this published.
    def wait_acked(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.unacked:
            if time.monotonic() > deadline:
                why = f"{self.name}: the broker did not acknowledge {self.unacked} publishes"
                raise SenderStuck(f"{why} within {timeout_s:.0f}s")
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
