"""Runs a SummaryPlan in the ring's scratch slots (engine thread, torch).

The first forward holds the digest, the question, the reply's opening and the
first openers, padded to a fixed size on a GPU so that one captured graph
serves every summary. Then, per segment, the model writes until its sentence
ends; what it wrote past that end is forgotten (rewound) and the next opener
goes in. The stream cache is never touched: all of it lives in scratch slots.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from streamd.cache.hf import RingModel
from streamd.facts.sentences import split_sentences

from .api import Deadline
from .grounding import SummaryPlan, Written

Encode = Callable[[str], list[int]]  # text -> ids, special tokens split (stream text)
# Sizes an opener's forward is padded to on a GPU (one captured graph each).
OPENER_BUCKETS = (16, 32, 64, 128)


class TokenGenerator(Protocol):
    """StaticDecoder, or the plain reference path (summarizer.PlainDecoder)."""

    first_token_at: float

    def generate(
        self,
        first_logits: torch.Tensor,
        max_new_tokens: int,
        stop: Callable[[list[int]], bool] | None = None,
        seen: Sequence[int] = (),
        banned: Sequence[int] = (),
    ) -> list[int]: ...


@dataclass(frozen=True)
class GuidedResult:
    written: tuple[Written, ...]
    generated_tokens: int
    first_token_s: float  # from the start to the first generated token on the host


@dataclass(frozen=True)
class RequestShape:
    """The first forward: `tokens` in all, padded with `pad_id` before the digest
    when `pad` (a GPU replays one captured graph of that size). With `pad_openers`,
    each later forward is padded after its end to an OPENER_BUCKETS size."""

    tokens: int
    pad_id: int
    pad: bool
    pad_openers: bool = False


class GuidedDecoder:
    def __init__(
        self,
        runner: RingModel,
        decoder: TokenGenerator,
        encode: Encode,
        encode_many: Callable[[list[str]], list[list[int]]],
        decode: Callable[[list[int]], str],
        shape: RequestShape,
        banned: Sequence[int] = (),
    ) -> None:
        self.runner = runner
        self.ring = runner.ring
        self.decoder = decoder
        self._encode = encode
        self._encode_many = encode_many
        self._decode = decode
        self.shape = shape
        # Tokens the model may not write after an opener: quote marks (its "quotes" are
        # invented and pair up with the facts' quoted templates).
        self.banned = tuple(banned)

    def first_ids(self, plan: SummaryPlan, reply_open: list[int], forced: str) -> list[int]:
        """Digest + question + reply opening + the first forced words, at most
        shape.tokens long (digest lines dropped from its end to fit), padded if asked.
        One batched tokenizer call: this is on the way to the first token."""
        rows = plan.digest.split("\n")
        texts = [plan.question, forced, "\n\n" + rows[0], *("\n" + row for row in rows[1:])]
        question, opener, *digest_rows = self._encode_many(texts)
        tail = question + reply_open + opener
        room = self.shape.tokens - len(tail)
        digest: list[int] = []
        for row in digest_rows:  # the digest's lines by importance: keep a prefix that fits
            if len(digest) + len(row) > room:
                break
            digest += row
        ids = (digest + tail)[-self.shape.tokens :]  # no digest line fits: keep the tail
        if self.shape.pad:
            ids = [self.shape.pad_id] * (self.shape.tokens - len(ids)) + ids
        return ids

    def run(
        self,
        plan: SummaryPlan,
        reply_open: list[int],
        budget: int,
        deadline: Deadline | None = None,
    ) -> GuidedResult:
        """Must run inside ring.begin_scratch() / end_scratch(). Past the deadline the
        model writes no more: a completion it is in the middle of is forgotten (whole
        sentences only), and the later segments keep their facts openers alone."""
        began = time.perf_counter()
        deadline = deadline or Deadline()

        def stop(tokens: list[int]) -> bool:
            return deadline.passed() or self._sentence_done(tokens)

        written: list[Written] = []
        pending = ""  # forced words not yet fed to the model
        carry: list[int] = []  # the model's kept tokens not yet in the cache
        generated = 0
        first_token_s = 0.0
        started = False  # the first forward (digest, question, openers) has run
        seen: list[int] = []  # the model's kept tokens: the repetition penalty spans segments
        for segment in plan.segments:
            pending += (" " if written else "") + segment.opener
            limit = min(segment.tokens, budget - generated)
            if limit <= 0 or deadline.passed():
                written.append(Written(segment, ""))
                continue
            first = not started
            if first:
                ids = self.first_ids(plan, reply_open, pending)
            else:
                ids = carry + self._encode(pending)
            if self.ring.decode_steps_left() < len(ids) + limit:
                written.append(Written(segment, ""))  # out of summary slots: openers only
                continue
            logits = self._first_forward(ids) if first else self._opener_forward(ids)
            started = True
            before = self.ring.scratch_used
            tokens = self.decoder.generate(logits, limit, stop, seen, self.banned)
            if first:
                first_token_s = self.decoder.first_token_at - began
            # StaticDecoder asks `stop` once a block (16 steps on a GPU) and so writes past
            # the sentence end: cut back to where a decoder that asks after every token
            # (PlainDecoder, a CPU) stops. Else the overshoot eats the budget of the later
            # segments, and the sentence split, which looks past a stop, may see other text.
            tokens = tokens[: self._stop_point(tokens)]
            generated += len(tokens)
            kept, completion = self._first_sentence(tokens)
            in_cache = min(len(kept), self.ring.scratch_used - before)
            self.ring.rewind_scratch(before + in_cache)
            carry = kept[in_cache:]
            seen += kept
            written.append(Written(segment, completion))
            # An unfinished completion is forgotten: the model goes on after a full stop.
            pending = "" if completion else "."
        return GuidedResult(tuple(written), generated, first_token_s)

    def _first_forward(self, ids: list[int]) -> torch.Tensor:
        """[vocab] logits after the request (one size on a GPU: one captured graph)."""
        return self.runner.scratch(self.runner.ids(ids))[0, -1]

    def _opener_forward(self, ids: list[int]) -> torch.Tensor:
        """[vocab] logits after an opener (the model's carried tokens and streamd's words).
        On a GPU it is padded at its end to one of OPENER_BUCKETS, so that a few captured
        graphs serve every opener (an eager forward of the default model takes ~20 ms), and
        the padding is rewound before the model writes: it follows the opener, and no
        position before it attends to it."""
        count, room = len(ids), self.ring.decode_steps_left()
        bucket = next((size for size in OPENER_BUCKETS if count <= size <= room), None)
        if not self.shape.pad_openers or bucket is None:
            return self.runner.scratch(self.runner.ids(ids), graph=False)[0, -1]
        before = self.ring.scratch_used
        padded = ids + [self.shape.pad_id] * (bucket - count)
        logits = self.runner.scratch(self.runner.ids(padded), logits_to_keep=bucket)
        self.ring.rewind_scratch(before + count)
        return logits[0, count - 1]

    def _stop_point(self, tokens: list[int]) -> int:
        """The shortest prefix of `tokens` at which _sentence_done stops a decoder."""
        for count in range(1, len(tokens)):
            if self._sentence_done(tokens[:count]):
                return count
        return len(tokens)

    def _sentence_done(self, tokens: list[int]) -> bool:
        text = self._decode(tokens)
        return "\n" in text or len(split_sentences(text)) > 1

    def _first_sentence(self, tokens: list[int]) -> tuple[list[int], str]:
        """(the tokens of the completion's first sentence, its text); ([], "") when it
        wrote no complete sentence."""
        sentences = split_sentences(self._decode(tokens).split("\n")[0])
        first = sentences[0].strip() if sentences else ""
        if not first.rstrip("\"')]").endswith((".", "!", "?")):
            return [], ""
        for count in range(1, len(tokens) + 1):
            if self._decode(tokens[:count]).strip().startswith(first):
                return tokens[:count], first
        return [], ""


def quote_token_ids(tokenizer: Any, vocab: int) -> list[int]:
    """Every token id below `vocab` (the model's logits) that writes a double quote mark."""
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab))))
    return [i for i, piece in enumerate(pieces) if piece and any(q in piece for q in '"“”')]
