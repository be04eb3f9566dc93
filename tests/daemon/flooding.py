"""Senders that push as fast as ZeroMQ takes messages, in a process of their own (so the
test's own waits and status requests do not compete with them for the GIL)."""

from __future__ import annotations

import subprocess
import sys
from types import TracebackType

from streamd.daemon.tools.testing import clean_env

# Small messages, as many as libzmq will queue: the daemon's socket never runs dry.
_FLOOD = """
import sys, zmq
socket = zmq.Context().socket(zmq.PUSH)
socket.setsockopt(zmq.SNDHWM, 100_000)
socket.connect(sys.argv[1])
line = b"Feb 25 14:34:10 host sshd[4242]: Failed password for root from 10.0.0.7 port 22"
while True:
    socket.send(line)
"""


class Flood:
    """`with Flood(endpoint):` a PUSH sender that never stops until the block ends."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Flood:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _FLOOD, self.endpoint], env=clean_env()
        )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
