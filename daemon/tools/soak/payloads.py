"""What the soak sends: real log lines, about `malformed` of them spoiled, and a few blobs.

Each kind has the one outcome connectors/messages.py's rules give it (the table at `Kind`),
which lets the soak compare sent against rejected by reason.
"""

from __future__ import annotations

import random
from enum import StrEnum
from importlib import resources

from streamd.connectors import RejectReason

BLOB_BYTES = 10_000_000  # "10 MB blobs": ten times the daemon's 1 MiB max_message_bytes


# Each kind and the one outcome the daemon must give it (connectors/messages.py's rules):
#     good         a real log line                        ingested
#     bad_utf8     a line with invalid UTF-8 bytes in it  ingested, 4 sequences replaced
#     nul          a line with NUL bytes in it            ingested, 3 NULs stripped
#     broken_json  a JSON envelope cut short              rejected: bad_json_envelope
#     blob         10 MB of binary                        rejected: too_large (MQTT); over
#                                                         ZeroMQ, libzmq drops the connection
#                                                         (ZMQ_MAXMSGSIZE) and the daemon
#                                                         never sees it
class Kind(StrEnum):
    GOOD = "good"
    BAD_UTF8 = "bad_utf8"
    NUL = "nul"
    BROKEN_JSON = "broken_json"
    BLOB = "blob"


MALFORMED = (Kind.BAD_UTF8, Kind.NUL, Kind.BROKEN_JSON)  # picked at random; blobs are scheduled
REJECTED_AS = {Kind.BROKEN_JSON: RejectReason.BAD_JSON_ENVELOPE, Kind.BLOB: RejectReason.TOO_LARGE}
# The decoder's repairs to one message of each kind, as `status` counts them by kind
# (repaired_by_kind); the bundled lines are clean UTF-8 text, so a good line has none.
REPAIRS = {Kind.BAD_UTF8: {"replaced": 4}, Kind.NUL: {"stripped": 3}}


def sample_lines() -> list[bytes]:
    """The real fail2ban log lines bundled with streamd (daemon/data/SOURCES.md)."""
    data = resources.files("streamd.daemon.data").joinpath("fail2ban-sample.log").read_bytes()
    return [line for line in data.splitlines() if line.strip()]


def spoil(kind: Kind, line: bytes, blob_bytes: int = BLOB_BYTES) -> bytes:
    """`line` made into a message of `kind`."""
    middle = len(line) // 2
    if kind is Kind.BAD_UTF8:
        # A lone continuation byte, an overlong encoding (2 bytes, each replaced) and a
        # cut-off sequence at the end (replaced once): 4 replacements.
        return line[:middle] + b"\x80\xc0\xaf" + line[middle:] + b"\xe2\x82"
    if kind is Kind.NUL:
        return b"\x00" + line[:middle] + b"\x00\x00" + line[middle:]  # 3 stripped
    if kind is Kind.BROKEN_JSON:
        return b'{"text": "' + line[:middle]  # no closing quote, no closing brace
    if kind is Kind.BLOB:
        pattern = bytes(range(256))
        return (pattern * (blob_bytes // len(pattern) + 1))[:blob_bytes]
    return line


class Mix:
    """An endless, seeded sequence of (kind, payload): real lines, `malformed` of them
    spoiled with one of MALFORMED at random."""

    def __init__(self, malformed: float, seed: int) -> None:
        self.malformed = malformed
        self._rng = random.Random(seed)
        self._lines = sample_lines()
        self._next_line = self._rng.randrange(len(self._lines))

    def next(self) -> tuple[Kind, bytes]:
        line = self._lines[self._next_line]
        self._next_line = (self._next_line + 1) % len(self._lines)
        kind = self._rng.choice(MALFORMED) if self._rng.random() < self.malformed else Kind.GOOD
        return kind, spoil(kind, line)
