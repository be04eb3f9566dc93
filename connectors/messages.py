"""Turn one received message (bytes) into stream lines, or a rejection with a reason.

Any bytes give `Accepted` or `Rejected`, never an exception: a log summarizer sees its worst
input on a system's worst day. The rules, in order, are commented in `decode_message`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from .checks import check_positive

MIB = 1024 * 1024
REPLACEMENT_CHAR = "\ufffd"
_UTF8_REPLACEMENT = REPLACEMENT_CHAR.encode()

_ENVELOPE_START = re.compile(r'\s*\{\s*"(?:text|source)"\s*:')
# CSI sequences such as "\x1b[31m" (colours in journalctl/docker logs): removing
# only the ESC byte would leave "[31m" noise in every line.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# C0 controls except tab (\x09) and newline (\x0a), DEL, and the C1 controls.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class DecoderConfig:
    """Limits of the decoder; the same max_message_bytes is set on the sockets."""

    max_message_bytes: int = MIB  # a whole message, as received
    max_line_chars: int = 4096  # longer lines are cut into pieces of this many characters
    max_source_chars: int = 64  # an envelope's "source" is cut to this length

    def __post_init__(self) -> None:
        check_positive("max_message_bytes", self.max_message_bytes)
        check_positive("max_line_chars", self.max_line_chars)
        check_positive("max_source_chars", self.max_source_chars)


DEFAULT_DECODER = DecoderConfig()


@dataclass(frozen=True)
class RawMessage:
    """One message as a source received it, before any decoding."""

    source: str  # the connector that received it ("zmq-pull", "mqtt", ...): a bounded set
    payload: bytes
    # MQTT topic, or a ZeroMQ SUB topic frame. The daemon does not read it yet;
    # the sources fill it in so that routing by topic needs no source change.
    topic: str | None = None
    # Set when the source let the message go unkept for being over its size limit (the
    # payload is then empty): the bytes it had, all parts together.
    received_bytes: int | None = None


# Called by a source for each message it receives, one at a time; awaiting it
# is how a source waits for room in the daemon's ingest queue (backpressure).
Deliver = Callable[[RawMessage], Awaitable[None]]


class Source(Protocol):
    """What the daemon needs of every source: `async with source: await source.run(deliver)`."""

    name: str

    async def open(self) -> None:
        """Bind/connect what can fail at start (a busy address); `async with` calls it."""

    async def close(self) -> None: ...

    async def run(self, deliver: Deliver) -> None:
        """Receive messages and await `deliver` for each, until cancelled."""


class RejectReason(StrEnum):
    """Why a message did not reach the session (a fixed set: it labels counters)."""

    EMPTY = "empty"
    TOO_LARGE = "too_large"
    BAD_JSON_ENVELOPE = "bad_json_envelope"
    # Far more tokens than characters (stacked combining marks): decided by the daemon,
    # which has the tokenizer (daemon/intake/token_guard.py), not by decode_message.
    TOKEN_HEAVY = "token_heavy"


@dataclass(frozen=True)
class Accepted:
    lines: tuple[str, ...]  # non-blank, no control characters but tab, each <= max_line_chars
    # The envelope's "source" (cleaned, cut to max_source_chars), else the name
    # the caller gave. Sender-chosen: label counters by RawMessage.source instead.
    # The daemon does not use it yet (its Lines carry the connector's name).
    source: str
    # How much the input had to be repaired: the daemon counts these by source
    # (streamd_ingest_repaired_total{source, kind}, kind being the field's name).
    replaced: int = 0  # invalid UTF-8 sequences / lone surrogates replaced by U+FFFD
    stripped: int = 0  # control characters and ANSI escape sequences removed
    cut: int = 0  # lines longer than max_line_chars that were cut into pieces


@dataclass(frozen=True)
class Rejected:
    reason: RejectReason
    source: str  # always the name the caller gave (an envelope's is not trusted for labels)
    detail: str  # one line for the log, saying why in words


Decoded = Accepted | Rejected


def decode_message(
    payload: bytes,
    source: str,
    config: DecoderConfig = DEFAULT_DECODER,
    *,
    received_bytes: int | None = None,
) -> Decoded:
    """Decode one message received from `source` (see the module docstring for the rules).
    received_bytes: its size as received, where the source did not keep the payload."""
    # 1. Size: a payload over max_message_bytes is rejected (too_large) before any other
    # work, so a 10 MB blob costs one length check.
    size = len(payload) if received_bytes is None else received_bytes
    if size > config.max_message_bytes:
        detail = f"{size} bytes > max_message_bytes {config.max_message_bytes}"
        return Rejected(RejectReason.TOO_LARGE, source, detail)
    # 2. Text: UTF-8; invalid sequences (and, from JSON escapes, lone surrogates) become
    # U+FFFD and are counted in Accepted.replaced.
    text, replaced = _utf8_text(payload)
    line_source = source
    # 3. Envelope: a message that starts like {"text": ... or {"source": ... is a JSON
    # envelope {"text": str, "source": str?, ...} (other keys ignored) and must be one, else
    # bad_json_envelope. Any other text, JSON log lines such as {"level": "info", ...}
    # included, is plain text: structured logs must not be refused for looking like JSON.
    if _ENVELOPE_START.match(text):
        opened = _open_envelope(text, source, config)
        if isinstance(opened, Rejected):
            return opened
        text, line_source = opened
        text, more_replaced = _replace_surrogates(text)
        replaced += more_replaced
    # 4. Cleaning: CR LF and lone CR become LF; ANSI colour/cursor sequences and control
    # characters (C0 but tab and newline, DEL, C1) are removed and counted in
    # Accepted.stripped.
    text, stripped = _clean(text)
    # 5. Lines: split on LF; blank lines dropped; a line longer than max_line_chars is cut
    # into pieces of at most that many characters (a pathological one-line message still
    # reaches the model, in bounded parts).
    lines, cut = _split_lines(text, config.max_line_chars)
    # 6. Nothing left: rejected as empty.
    if not lines:
        return Rejected(RejectReason.EMPTY, source, "no text left after removing blank lines")
    return Accepted(tuple(lines), line_source, replaced=replaced, stripped=stripped, cut=cut)


def _utf8_text(payload: bytes) -> tuple[str, int]:
    """Decode UTF-8, replacing invalid sequences; returns (text, how many were replaced)."""
    try:
        return payload.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = payload.decode("utf-8", errors="replace")
        # U+FFFD that were already in the input are valid UTF-8 and decode as
        # themselves (a valid sequence is never swallowed by an invalid one).
        return text, text.count(REPLACEMENT_CHAR) - payload.count(_UTF8_REPLACEMENT)


def _open_envelope(
    text: str, default_source: str, config: DecoderConfig
) -> tuple[str, str] | Rejected:
    """Returns (text, source) of a valid envelope, else the rejection."""
    try:
        # strict=False: raw tabs/newlines inside strings are common from
        # hand-written senders; the cleaning step deals with them.
        envelope: Any = json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        return _bad_envelope(default_source, f"not valid JSON: {exc.msg} at char {exc.pos}")
    except (ValueError, RecursionError) as exc:  # e.g. a 5000-digit number, [[[[...]]]]
        return _bad_envelope(default_source, f"not valid JSON: {type(exc).__name__}")
    if not isinstance(envelope, dict) or not isinstance(envelope.get("text"), str):
        return _bad_envelope(default_source, 'an envelope needs "text" as a string')
    source = envelope.get("source")
    if source is None:  # absent or null: the connector's name stands
        return envelope["text"], default_source
    if not isinstance(source, str):
        return _bad_envelope(default_source, '"source" must be a string')
    return envelope["text"], _clean_source(source, default_source, config.max_source_chars)


def _bad_envelope(source: str, detail: str) -> Rejected:
    return Rejected(RejectReason.BAD_JSON_ENVELOPE, source, detail)


def _clean_source(source: str, default_source: str, max_chars: int) -> str:
    # The name ends up in logs and status tables: one short printable line.
    cleaned = _CONTROL_CHARS.sub("", _replace_surrogates(source)[0]).strip()[:max_chars]
    return cleaned or default_source


def _replace_surrogates(text: str) -> tuple[str, int]:
    # JSON "\ud800" escapes decode to lone surrogates, which cannot be encoded
    # to UTF-8 again (the tokenizer, the JSONL output would fail on them).
    return _SURROGATES.subn(REPLACEMENT_CHAR, text)


def _clean(text: str) -> tuple[str, int]:
    """Normalise line ends and remove escape sequences and control characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text, escapes = _ANSI_ESCAPE.subn("", text)
    text, controls = _CONTROL_CHARS.subn("", text)
    return text, escapes + controls


def _split_lines(text: str, max_chars: int) -> tuple[list[str], int]:
    """Non-blank lines, long ones cut into pieces; returns (lines, how many were cut)."""
    lines: list[str] = []
    cut = 0
    for line in text.split("\n"):
        if not line.strip():
            continue
        if len(line) <= max_chars:
            lines.append(line)
            continue
        cut += 1
        pieces = (line[i : i + max_chars] for i in range(0, len(line), max_chars))
        # A piece of a long line may be all spaces: drop it like a blank line.
        lines.extend(piece for piece in pieces if piece.strip())
    return lines, cut
