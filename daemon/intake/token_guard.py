"""token_heavy: a message whose tokens far outnumber the characters a reader sees.

Every bound before the engine (max_message_bytes, ingest.queue_max_chars, the batch size)
counts bytes or characters and trusts text to run about 4 characters a token. Unicode lets
a sender stack combining marks on one letter without end, and a byte-level tokenizer
spends about a token per byte of them: 600 KB of marks held the engine for over five
minutes (#11, observation 10). So a message may have at most `max_tokens_per_char` tokens
per character, combining marks (category M) not counted as characters, plus TOKEN_SLACK;
one over it is rejected (reason token_heavy, counted per source).

The tokenizer is only asked when the text could be over: a token is never more than a UTF-8
byte (+1 per character for SentencePiece's spaces), so CJK, emoji and ASCII text pass on a
byte count, and only mark-heavy text is tokenized, on a worker thread.
"""

from __future__ import annotations

import asyncio
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from streamd.connectors import Accepted, DecoderConfig, RawMessage, Rejected, decode_message
from streamd.connectors.messages import RejectReason

if TYPE_CHECKING:
    from ..config import Config

# Short messages never count as heavy: a line of a few emoji is cheap however it tokenizes.
TOKEN_SLACK = 256

# The total number of stream tokens of these lines; safe to call from any thread.
TokenCounter = Callable[[Sequence[str]], int]


@dataclass(frozen=True)
class Weight:
    """What a message may cost and what it could cost at most, before any tokenizing."""

    allowed: int  # tokens
    bound: int  # tokens it cannot exceed, from its UTF-8 bytes


class TokenGuard:
    """Decides token_heavy for Intake; inert until the model's tokenizer is known."""

    def __init__(
        self, max_tokens_per_char: float, counter: Callable[[], TokenCounter | None]
    ) -> None:
        self.max_tokens_per_char = max_tokens_per_char  # 0: off
        self._counter = counter  # the engine's, once the model is loaded

    def weigh(self, lines: Sequence[str]) -> Weight | None:
        """None when `lines` cannot be token-heavy (most text: a byte count decides);
        else what the tokenizer must settle. Linear in the text: call it where decoding
        ran (off the loop for a large message)."""
        if not self.max_tokens_per_char:
            return None
        chars = sum(len(line) + 1 for line in lines)  # each line ends in a newline
        if all(line.isascii() for line in lines):
            bound = 2 * chars  # a byte a character; +1 a character for SentencePiece
        else:
            bound = sum(len(line.encode("utf-8", "replace")) for line in lines) + chars
        if bound <= TOKEN_SLACK:
            return None
        # ASCII has no combining marks: only the other lines are scanned, character by character.
        seen = chars - sum(_marks(line) for line in lines if not line.isascii())
        allowed = int(self.max_tokens_per_char * seen) + TOKEN_SLACK
        return None if bound <= allowed else Weight(allowed, bound)

    def excess(self, lines: Sequence[str], weight: Weight) -> str | None:
        """Tokenizes (a worker thread's job): why the lines are token_heavy, or None."""
        counter = self._counter()
        if counter is None:
            return None  # no model yet: nothing to measure with
        tokens = counter(lines)
        if tokens <= weight.allowed:
            return None
        return (
            f"{tokens} tokens > {weight.allowed} allowed (ingest.max_tokens_per_char = "
            f"{self.max_tokens_per_char:g} per character, combining marks not counted)"
        )


def _marks(line: str) -> int:
    """Combining marks (Unicode category M) in `line`."""
    return sum(1 for char in line if unicodedata.category(char)[0] == "M")


class _HasCounter(Protocol):
    """The scheduler's Engine: its token_counter is set once the model is loaded."""

    token_counter: Callable[[Sequence[str]], int] | None


def token_guard(config: Config, engine: _HasCounter) -> TokenGuard:
    """The daemon's: ingest.max_tokens_per_char, counting with the engine's tokenizer copy."""
    return TokenGuard(config.ingest.max_tokens_per_char, lambda: engine.token_counter)


@dataclass(frozen=True)
class Weighed:
    """A decoded message, and for accepted text that may be token-heavy, its Weight."""

    source: str  # the connector's name (an envelope's "source" is the sender's choice)
    decoded: Accepted | Rejected
    weight: Weight | None = None


def decode_weighed(
    message: RawMessage, decoder: DecoderConfig, guard: TokenGuard | None
) -> Weighed:
    """decode_message, then TokenGuard.weigh on what it accepted (both linear in the text:
    the caller runs them off the loop for a large message)."""
    decoded = decode_message(
        message.payload, message.source, decoder, received_bytes=message.received_bytes
    )
    if guard is None or not isinstance(decoded, Accepted):
        return Weighed(message.source, decoded)
    return Weighed(message.source, decoded, guard.weigh(decoded.lines))


async def settle(weighed: Weighed, guard: TokenGuard | None) -> Accepted | Rejected:
    """The decoded message, or token_heavy once the tokenizer (on a worker thread) says so."""
    decoded, weight = weighed.decoded, weighed.weight
    if weight is None or guard is None or not isinstance(decoded, Accepted):
        return decoded
    excess = await asyncio.to_thread(guard.excess, decoded.lines, weight)
    if excess is None:
        return decoded
    return Rejected(RejectReason.TOKEN_HEAVY, weighed.source, excess)
