"""The session and everything that touches it. Every method runs on the engine thread.

The worker returns plain data (SessionStats, Summary, ints) that the event
loop may hold; the Session, its tensors and the model never leave this side.
It also updates the metrics the session's work produces (the metrics take
their own locks, so the loop may render them meanwhile).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import Config
from ..logsetup import route_transformers_logging
from ..metrics import StreamdMetrics
from ..snapshot import SessionState
from .api import SessionStats, Summary
from .prefill import prefill_with_retry
from .prompts import DEFAULT_SYSTEM_PROMPT

if TYPE_CHECKING:  # the import pulls torch in: only the engine thread pays for it, at load
    from .session import Session, SessionConfig


def session_config(config: Config) -> SessionConfig:
    """The session's settings from the daemon's (on the engine thread: it imports torch)."""
    from .session import SessionConfig

    return SessionConfig(
        model=config.model.name,
        device=config.model.device,
        dtype=config.model.dtype,
        max_capacity=config.cache.max_capacity,
        chunk=config.cache.chunk,
        summary_max_tokens=config.summary.max_tokens,
        system_prompt=config.cache.system_prompt or DEFAULT_SYSTEM_PROMPT,
        summary_mode=config.summary.mode,
        profile=config.summary.profile,
        unsupported=config.summary.unsupported,
    )


@dataclass(frozen=True)
class Ingested:
    tokens: int  # stream tokens prefilled
    stats: SessionStats  # the session right after
    retried: bool = False  # a forward pass failed; the rest went in smaller pieces


@dataclass(frozen=True)
class Resized:
    old: int
    new: int
    stats: SessionStats


def _no_progress_bars_unless_interactive() -> None:
    """transformers draws tqdm bars on stderr while it loads: noise in the journal."""
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


class SessionWorker:
    def __init__(
        self,
        metrics: StreamdMetrics,
        # Builds the session at load; tests pass one that injects faults.
        session_factory: Callable[[SessionConfig], Session] | None = None,
    ) -> None:
        self._metrics = metrics
        self._session_factory = session_factory
        self._session: Session | None = None
        self._evicted = 0  # tokens_evicted already counted in the metrics

    def load(self, config: Config) -> SessionStats:
        from .session import Session

        route_transformers_logging()
        _no_progress_bars_unless_interactive()
        self._session = (self._session_factory or Session)(session_config(config))
        return self._observed_stats()

    def ingest(self, text: str) -> Ingested:
        """Tokenize and prefill, counting each chunk in the metrics as it is done. A failed
        forward pass is retried once in smaller pieces (prefill.py), then raised."""

        def observe(tokens: int, seconds: float) -> None:
            self._metrics.prefill_chunk.observe(seconds)
            self._metrics.ingest_tokens.inc(tokens)

        session = self._loaded()
        ids = session.tokenize_stream(text)
        chunk = session.ring.layout.chunk
        retries = self._metrics.ingest_retries
        retried = prefill_with_retry(session.ingest_ids, ids, chunk, observe, retries)
        session.observe(text)  # the facts miner: only what the ring took in
        return Ingested(len(ids), self._observed_stats(), retried)

    def summarize(self) -> tuple[Summary, SessionStats]:
        summary = self._loaded().summarize()
        m = self._metrics
        m.time_to_first_token.observe(summary.ttft_s)
        if summary.generated_tokens > 1:  # TPOT is undefined for a single token
            m.inter_token_latency.observe(summary.tpot_s)
        m.summary_latency.observe(summary.latency_s)
        m.generation_tokens.inc(summary.generated_tokens)
        checked = summary.verification
        if checked is not None:
            m.summary_claims.inc(checked.supported, result="supported")
            m.summary_claims.inc(checked.checked - checked.supported, result="unsupported")
            m.summary_sentences_removed.inc(len(checked.removed_sentences))
        return summary, self._observed_stats()

    def set_max_capacity(self, n: int) -> Resized:
        """Raises ConfigError (a ValueError) with the reason on a value that cannot work."""
        old, new = self._loaded().set_max_capacity(n)
        return Resized(old, new, self._observed_stats())

    def snapshot_state(self) -> SessionState:
        """The window's token ids and the counters, for a snapshot."""
        return self._loaded().snapshot_state()

    def restore(self, state: SessionState) -> SessionStats:
        """Re-prefill a snapshot's window (ValueError: it does not fit this session)."""
        session = self._loaded()
        session.restore(state)
        # Tokens evicted before this process started were counted by the one before it.
        self._evicted = session.stats().tokens_evicted
        return self._observed_stats()

    def _loaded(self) -> Session:
        if self._session is None:
            raise RuntimeError("the session is not loaded yet")
        return self._session

    def _observed_stats(self) -> SessionStats:
        stats = self._loaded().stats()
        m = self._metrics
        m.kv_cache_usage.set(stats.used / stats.max_capacity)
        m.cache_max_capacity.set(stats.max_capacity)
        # Growing the window can make evicted tokens visible again; a counter only rises.
        if stats.tokens_evicted > self._evicted:
            m.evicted_tokens.inc(stats.tokens_evicted - self._evicted)
            self._evicted = stats.tokens_evicted
        return stats
