"""Writes one summary after the stream head (engine thread, torch).

Grounded (the default): the facts of the window and of the lines since the
last summary go in as a digest, the model completes sentence openers written
from those facts, and only what passes the checks is published. Plain: the
bare question and whatever the model writes, as streamd did before the facts
(`streamd eval-summaries --compare` shows both).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from streamd.cache.decode import pick_token
from streamd.cache.hf import RingModel
from streamd.facts.claims import Evidence, Policy, Verification
from streamd.facts.records import SummaryFacts
from streamd.facts.sentences import complete_sentences
from streamd.facts.tracker import FactsTracker

from .api import Deadline
from .grounding import finish_summary, plan_summary
from .guided import GuidedDecoder, TokenGenerator


class PlainDecoder:
    """One ordinary forward per token, the token picked on the host: the reference
    the device-side StaticDecoder must match (decode = "plain")."""

    def __init__(
        self, runner: RingModel, stop_ids: frozenset[int], penalty: float, temperature: float
    ) -> None:
        self.runner = runner
        self.stop_ids = stop_ids
        self.penalty = penalty
        self.temperature = temperature
        self.first_token_at = 0.0
        self._banned: list[int] = []

    def generate(
        self,
        first_logits: torch.Tensor,
        max_new_tokens: int,
        stop: Callable[[list[int]], bool] | None = None,
        seen: Sequence[int] = (),
        banned: Sequence[int] = (),
    ) -> list[int]:
        """first_logits: [vocab]. Same contract as StaticDecoder.generate."""
        self._banned = list(banned)
        token = self._pick(first_logits, list(seen))
        self.first_token_at = time.perf_counter()
        generated: list[int] = []
        while token not in self.stop_ids:
            generated.append(token)
            if len(generated) >= max_new_tokens or (stop and stop(generated)):
                break
            logits = self.runner.scratch(self.runner.ids([token]))
            token = self._pick(logits[0, -1], [*seen, *generated])
        return generated

    def _pick(self, logits: torch.Tensor, generated: list[int]) -> int:
        """logits: [vocab] -> the next token, with the repetition penalty on `generated`."""
        seen = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        banned = torch.zeros_like(seen)
        for mask, ids in ((seen, generated), (banned, self._banned)):
            if ids:
                mask[torch.tensor(ids, device=logits.device)] = True
        return int(pick_token(logits, seen, self.penalty, self.temperature, banned))


@dataclass(frozen=True)
class Draft:
    text: str
    generated_tokens: int
    first_token_s: float
    facts: SummaryFacts | None = None  # grounded only
    verification: Verification | None = None  # grounded only
    time_limited: bool = False  # the deadline stopped it


@dataclass(frozen=True)
class SummaryText:
    """What the summarizer needs of the session's framing."""

    plain_request: list[int]  # the bare question + the reply's opening (plain path)
    reply_open: list[int]  # ends the data turn, opens the model's reply
    echo_sources: tuple[str, ...]  # instructions the model must not repeat


class Summarizer:
    def __init__(
        self,
        runner: RingModel,
        decoder: TokenGenerator,
        guided: GuidedDecoder,
        framing: SummaryText,
        facts: FactsTracker,
        policy: Policy,
    ) -> None:
        self.runner = runner
        self.decoder = decoder
        self.guided = guided
        self.framing = framing
        self.facts = facts
        self.policy = policy

    def plain(
        self, limit: int, decode: Callable[[list[int]], str], deadline: Deadline | None = None
    ) -> Draft:
        """The bare question; past the deadline the text is cut to its last whole sentence."""
        deadline = deadline or Deadline()
        began = time.perf_counter()
        logits = self.runner.scratch(self.runner.ids(self.framing.plain_request))
        tokens = self.decoder.generate(logits[0, -1], limit, lambda _: deadline.passed())
        first_token_s = self.decoder.first_token_at - began
        text = decode(tokens).strip()
        limited = deadline.passed()
        if limited:
            text, _ = complete_sentences(text)  # ends where a sentence does
        return Draft(text, len(tokens), first_token_s, time_limited=limited)

    def grounded(
        self,
        limit: int,
        window_text: str,
        window_lines: list[str],
        deadline: Deadline | None = None,
    ) -> Draft:
        """The facts since the last summary close here: the next one starts afresh."""
        facts = self.facts.summary_facts(window_lines)
        plan = plan_summary(facts)
        result = self.guided.run(plan, self.framing.reply_open, limit, deadline)
        checked = finish_summary(
            result.written, Evidence(window_text, facts), self.policy, self.framing.echo_sources
        )
        self.facts.close_period()
        return Draft(
            checked.text,
            result.generated_tokens,
            result.first_token_s,
            facts,
            checked.verification,
            time_limited=deadline is not None and deadline.passed(),
        )
