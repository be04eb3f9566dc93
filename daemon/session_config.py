"""The session's settings: frozen, checked once when built."""

from __future__ import annotations

from dataclasses import dataclass

from streamd.facts.claims import POLICIES
from streamd.facts.records import PROFILES

from .prompts import DEFAULT_SYSTEM_PROMPT

DEFAULT_MODEL = "default"  # the embedded SmolLM2 (model_loading.py)
SUMMARY_MODES = ("grounded", "plain")
MIN_PINNED = 4  # StreamingLLM: 4 sink tokens are enough, fewer and window attention collapses
# Scratch slots for a grounded summary's openers (facts sentences, quoted templates).
OPENER_TOKENS = 256


class SessionConfigError(ValueError):
    """A session setting that cannot work; the message names it and the fix."""


@dataclass(frozen=True)
class SessionConfig:
    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    max_capacity: int = 1024  # P + W: tokens any query sees (pinned prefix included)
    chunk: int = 256  # C: stream tokens per forward pass
    summary_max_tokens: int = 128
    # >1 discourages tokens already generated; small models loop without it.
    repetition_penalty: float = 1.2
    temperature: float = 0.0  # 0 = greedy
    # "static": device-side decode steps, one CUDA graph replayed per token on a GPU;
    # "plain": one ordinary forward per token (the reference the fast path must match).
    decode: str = "static"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    rebase_threshold: int = 2**15
    # The grounded summary's first forward (facts digest, question, first openers):
    # one fixed size, so a GPU replays one captured graph for every summary.
    summary_request_tokens: int = 256
    # grounded: on the facts, checked (summarizer.py); plain: the bare question, unchecked.
    summary_mode: str = "grounded"
    profile: str = "auto"  # logs | transcript | auto (per window)
    unsupported: str = "drop-sentence"  # or flag: what happens to an unsupported claim

    def __post_init__(self) -> None:
        checks = [
            ("max_capacity", self.max_capacity, 2 * MIN_PINNED),
            ("chunk", self.chunk, 1),
            ("summary_max_tokens", self.summary_max_tokens, 1),
            ("rebase_threshold", self.rebase_threshold, 1),
            ("summary_request_tokens", self.summary_request_tokens, 64),
        ]
        if self.summary_mode not in SUMMARY_MODES:
            raise SessionConfigError(
                f"summary_mode = {self.summary_mode!r}: use {' or '.join(SUMMARY_MODES)}"
            )
        if self.profile not in PROFILES:
            raise SessionConfigError(f"profile = {self.profile!r}: use {', '.join(PROFILES)}")
        if self.unsupported not in POLICIES:
            raise SessionConfigError(
                f"unsupported = {self.unsupported!r}: use {' or '.join(POLICIES)}"
            )
        if self.decode not in ("static", "plain"):
            raise SessionConfigError(f"decode = {self.decode!r}: use static or plain")
        if not 0.0 <= self.temperature <= 5.0:
            raise SessionConfigError(f"temperature = {self.temperature!r}: must be 0 (greedy)..5")
        if not 1.0 <= self.repetition_penalty <= 2.0:
            raise SessionConfigError(
                f"repetition_penalty = {self.repetition_penalty!r}: must be between 1.0 and 2.0"
            )
        for name, value, lowest in checks:
            if not isinstance(value, int) or value < lowest:
                raise SessionConfigError(f"{name} = {value!r}: must be an integer >= {lowest}")
