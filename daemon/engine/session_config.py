"""The session's settings: frozen, checked once when built, by the rules the config uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from streamd.cache.layout import CacheLayout, LayoutError
from streamd.errors import ConfigError

from ..config import Config, rules
from ..config.rules import DEFAULT_MODEL, MIN_PINNED, Rule, Section
from .prompts import DEFAULT_SYSTEM_PROMPT

# Scratch slots for a grounded summary's openers (facts sentences, quoted templates).
OPENER_TOKENS = 256


@dataclass(frozen=True)
class SessionConfig(Section):
    section: ClassVar[str] = ""  # errors name the bare field: "max_capacity = 2: ..."

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0  # CPU threads for the matmuls; 0: torch's own (one per core)
    # P + W: tokens any query sees (pinned prefix included)
    max_capacity: int = field(default=1024, metadata=rules.MAX_CAPACITY.meta)
    chunk: int = field(default=256, metadata=rules.CHUNK.meta)  # C: stream tokens per forward pass
    refresh: str = field(default="auto", metadata=rules.REFRESH.meta)  # cache/layout.py
    summary_max_tokens: int = field(default=128, metadata=rules.SUMMARY_MAX_TOKENS.meta)
    # >1 discourages tokens already generated; small models loop without it.
    repetition_penalty: float = field(default=1.2, metadata=Rule(at_least=1, at_most=2).meta)
    temperature: float = field(  # 0 = greedy
        default=0.0, metadata=Rule(at_least=0, at_most=5, hint="0 is greedy").meta
    )
    # "static": device-side decode steps, one CUDA graph replayed per token on a GPU;
    # "plain": one ordinary forward per token (the reference the fast path must match).
    decode: str = field(default="static", metadata=Rule(choices=("static", "plain")).meta)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    rebase_threshold: int = field(default=2**15, metadata=Rule(at_least=1).meta)
    # The grounded summary's first forward (facts digest, question, first openers):
    # one fixed size, so a GPU replays one captured graph for every summary.
    summary_request_tokens: int = field(default=256, metadata=Rule(at_least=64).meta)
    # grounded: on the facts, checked (summarizer.py); plain: the bare question, unchecked.
    summary_mode: str = field(default="grounded", metadata=rules.SUMMARY_MODE.meta)
    profile: str = field(default="auto", metadata=rules.PROFILE.meta)  # logs | transcript | auto
    # drop-sentence or flag: what happens to an unsupported claim
    unsupported: str = field(default="drop-sentence", metadata=rules.UNSUPPORTED.meta)

    @classmethod
    def of(cls, config: Config) -> SessionConfig:
        """The session's settings from the daemon's."""
        return cls(
            model=config.model.name,
            device=config.model.device,
            dtype=config.model.dtype,
            threads=config.model.threads,
            max_capacity=config.cache.max_capacity,
            chunk=config.cache.chunk,
            refresh=config.cache.refresh,
            summary_max_tokens=config.summary.max_tokens,
            system_prompt=config.cache.system_prompt or DEFAULT_SYSTEM_PROMPT,
            summary_mode=config.summary.mode,
            profile=config.summary.profile,
            unsupported=config.summary.unsupported,
        )

    def layout(self, pinned: int, plain_request: int) -> CacheLayout:
        """The ring's layout for a pinned prefix and a plain summary request of these
        many tokens; ConfigError says which setting cannot work."""
        if pinned < MIN_PINNED:
            raise ConfigError(
                f"the pinned prefix has {pinned} tokens; it needs >= {MIN_PINNED}: "
                "use a longer system prompt"
            )
        request = plain_request
        if self.summary_mode == "grounded":  # the plain path still fits (--compare)
            request = max(request, self.summary_request_tokens + OPENER_TOKENS)
        scratch = request + self.summary_max_tokens
        window = window_for(self.max_capacity, pinned)
        try:
            return CacheLayout.build(
                pinned=pinned, window=window, chunk=self.chunk, scratch=scratch
            )
        except LayoutError as error:
            raise ConfigError(str(error)) from None


def window_for(max_capacity: int, pinned: int) -> int:
    """W: what max_capacity leaves after the pinned prefix, at least one token."""
    if not isinstance(max_capacity, int) or max_capacity <= pinned:
        raise ConfigError(
            f"max_capacity = {max_capacity!r}: must be an integer above the pinned prefix of "
            f"{pinned} tokens (the system prompt); try {pinned + 512} or more"
        )
    return max_capacity - pinned
