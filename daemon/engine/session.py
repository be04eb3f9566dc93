"""One continuous model session over an unbounded stream: model + tokenizer + ring cache,
single-threaded by contract (the engine thread owns it). ingest() prefills in chunks of up
to C tokens; summarize() decodes in scratch slots and leaves the stream cache bit-identical;
set_max_capacity() resizes live."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout, LayoutError, StreamCounters
from streamd.errors import ConfigError
from streamd.facts.tracker import FactsTracker

from ..config.rules import MIN_PINNED
from ..snapshot import SessionState, check_restorable, text_digest
from .api import SessionStats, Summary
from .guided import GuidedDecoder, RequestShape, TokenGenerator, quote_token_ids
from .loading import LoadedModel, load_model
from .prompts import DEFAULT_SUMMARY_QUESTION, build_framing
from .session_config import OPENER_TOKENS, SessionConfig
from .summarizer import Draft, PlainDecoder, Summarizer, SummaryText
from .window_ids import TokenWindow


@dataclass
class _Timings:
    last_chunk_s: float = 0.0
    last_chunk_tokens: int = 0
    prefill_s_total: float = 0.0
    last_summary_ttft_s: float = 0.0
    last_summary_tpot_s: float = 0.0


class Session:
    def __init__(self, config: SessionConfig, loaded: LoadedModel | None = None) -> None:
        self.config = config
        self.loaded = loaded or load_model(config.model, config.device, config.dtype)
        self.model_name = self.loaded.name
        self.tokenizer = self.loaded.tokenizer
        framing = build_framing(self.tokenizer, config.system_prompt)
        self._prefix_ids = self._encode(framing.prefix, allow_special=True)
        self._request_ids = self._encode(framing.summary_request, allow_special=True)
        self._summary_text = SummaryText(
            plain_request=self._request_ids,
            reply_open=self._encode(framing.reply_open, allow_special=True),
            echo_sources=(config.system_prompt, DEFAULT_SUMMARY_QUESTION),
        )
        self.facts = FactsTracker(profile=config.profile)
        self._stop_ids = self._stop_token_ids()
        layout = self._layout(config)
        # The stream ids the window holds, for snapshots (the cache keeps only K/V).
        self._window_ids = TokenWindow(layout.window)
        # Stream tokens before the ring's own stream start: a resumed session's ring
        # starts at the snapshot's window, but its counters go on from the snapshot's.
        self._tokens_before_ring = 0
        self._attach_cache(layout)
        self.summaries = 0
        self.timings = _Timings()
        if self._on_gpu:
            self._warm_up()

    @property
    def _on_gpu(self) -> bool:
        return self.loaded.device.type == "cuda"

    def _attach_cache(self, layout: CacheLayout) -> None:
        """The ring, its runner and decoder; the pinned prefix prefilled."""
        config = self.config
        self.ring = build_ring_cache(
            self.loaded.model, layout, rebase_threshold=config.rebase_threshold
        )
        gpu = self._on_gpu
        self.runner = RingModel(self.loaded.model, self.ring, cuda_graphs=gpu, compile=gpu)
        self.decoder = StaticDecoder(
            self.runner,
            vocab=int(self.loaded.model.config.vocab_size),
            options=DecodeOptions(
                stop_ids=frozenset(self._stop_ids),
                repetition_penalty=config.repetition_penalty,
                temperature=config.temperature,
                # on a CPU a host check costs nothing beside a step: stop at a sentence end
                block=8 if gpu else 1,
                compile=self._on_gpu,
            ),
        )
        self.summarizer = self._summarizer(self.decoder)
        self.runner.prefix(self._tensor(self._prefix_ids))

    def _summarizer(self, static: StaticDecoder) -> Summarizer:
        config = self.config
        generator: TokenGenerator = static
        if config.decode == "plain":
            stops = frozenset(self._stop_ids)
            penalty, temperature = config.repetition_penalty, config.temperature
            generator = PlainDecoder(self.runner, stops, penalty, temperature)
        newline = self._encode("\n", allow_special=False)[:1] or [0]
        graphs = self.runner.cuda_graphs
        shape = RequestShape(config.summary_request_tokens, newline[0], graphs, pad_openers=graphs)
        text_ids = functools.partial(self._encode, allow_special=False)
        quotes = quote_token_ids(self.tokenizer, int(self.loaded.model.config.vocab_size))
        guided = GuidedDecoder(
            self.runner, generator, text_ids, self._encode_texts, self._decode_ids, shape, quotes
        )
        policy = "flag" if config.unsupported == "flag" else "drop-sentence"
        return Summarizer(self.runner, generator, guided, self._summary_text, self.facts, policy)

    def _encode_texts(self, texts: list[str]) -> list[list[int]]:
        """Stream text, many at once (one call into the tokenizer)."""
        batch = self.tokenizer(texts, add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in batch.input_ids]

    def _decode_ids(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _warm_up(self) -> None:
        """Compile and capture a full stream chunk and the summary path now, at start,
        not in the middle of the stream (on a GPU that takes tens of seconds).

        A chunk of filler tokens goes through the ring, then a summary; then the ring
        restarts empty on the same tensors (the captured graphs stay valid), so the
        session is what a fresh one would be.
        """
        newline = self._encode("\n", allow_special=False)[:1] or [0]
        filler = newline * self.ring.layout.chunk
        self.runner.stream(self._tensor(filler))
        self.summarize()
        self._restart_ring(origin=0)
        self.summaries = 0
        self.timings = _Timings()

    # ------------------------------------------------------------------ setup

    def _layout(self, config: SessionConfig) -> CacheLayout:
        pinned = len(self._prefix_ids)
        if pinned < MIN_PINNED:
            raise ConfigError(
                f"the pinned prefix has {pinned} tokens; it needs >= {MIN_PINNED}: "
                "use a longer system prompt"
            )
        window = _window_for(config.max_capacity, pinned)
        request = len(self._request_ids)
        if config.summary_mode == "grounded":  # the plain path still fits (--compare)
            request = max(request, config.summary_request_tokens + OPENER_TOKENS)
        scratch = request + config.summary_max_tokens
        try:
            return CacheLayout.build(
                pinned=pinned, window=window, chunk=config.chunk, scratch=scratch
            )
        except LayoutError as error:
            raise ConfigError(str(error)) from None

    def _encode(self, text: str, *, allow_special: bool) -> list[int]:
        # Stream text splits special tokens: "<|im_start|>" in a log line stays text.
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=not allow_special
        ).input_ids
        return list(ids)

    def _stop_token_ids(self) -> set[int]:
        stops = {self.tokenizer.eos_token_id}
        eos = getattr(self.loaded.model.generation_config, "eos_token_id", None)
        stops.update(eos if isinstance(eos, list) else [eos])
        return {s for s in stops if s is not None}

    def _tensor(self, ids: list[int]) -> torch.Tensor:
        return torch.tensor([ids], dtype=torch.long, device=self.loaded.device)

    # ----------------------------------------------------------------- stream

    def tokenize_stream(self, text: str) -> list[int]:
        """One message = one or more lines; every line ends in a newline token."""
        lines = stream_lines(text)
        if not lines:
            return []
        return self._encode("\n".join(lines) + "\n", allow_special=False)

    def ingest(self, text: str, on_chunk: Callable[[int, float], None] | None = None) -> int:
        """Tokenize and prefill `text`; returns the number of stream tokens ingested.
        on_chunk(tokens, seconds) is called after each chunk's forward pass."""
        ids = self.tokenize_stream(text)
        self.ingest_ids(ids, on_chunk)
        self.observe(text)
        return len(ids)

    def observe(self, text: str) -> None:
        """The facts miner takes in the lines of text the ring has taken in."""
        self.facts.observe(stream_lines(text))

    def ingest_ids(
        self, ids: list[int], on_chunk: Callable[[int, float], None] | None = None
    ) -> None:
        chunk = self.ring.layout.chunk
        for start in range(0, len(ids), chunk):
            piece = ids[start : start + chunk]
            first = self.ring.head
            began = time.perf_counter()
            self.runner.stream(self._tensor(piece))
            seconds = time.perf_counter() - began
            self._window_ids.write(first, piece)
            self._record_chunk(len(piece), seconds)
            if on_chunk is not None:
                on_chunk(len(piece), seconds)

    def _record_chunk(self, tokens: int, seconds: float) -> None:
        self.timings.last_chunk_s = seconds
        self.timings.last_chunk_tokens = tokens
        self.timings.prefill_s_total += seconds

    # ---------------------------------------------------------------- summary

    @contextmanager
    def _scratch(self) -> Iterator[None]:
        self.ring.begin_scratch()
        try:
            yield
        finally:
            self.ring.end_scratch()

    def window_text(self) -> str:
        """The stream text any query sees now, as the model read it."""
        return self._decode_ids(self.window_token_ids())

    def _window_lines(self, text: str) -> list[str]:
        """The window's whole lines: once tokens were evicted, the first may be a part."""
        lines = stream_lines(text)
        return lines[1:] if self.counters().evicted(self.ring.layout) else lines

    def summarize(self, max_new_tokens: int | None = None, grounded: bool | None = None) -> Summary:
        """A summary after the stream head; the stream cache is left bit-identical.
        Grounded (by default, the configured summary_mode): on the facts, checked
        (summarizer.py); else the bare question."""
        if grounded is None:
            grounded = self.config.summary_mode == "grounded"
        budget = self.config.summary_max_tokens
        limit = budget if max_new_tokens is None else max(1, min(max_new_tokens, budget))
        counters = self.counters()
        window_text = self.window_text()
        began = time.perf_counter()
        with self._scratch():
            if grounded:
                lines = self._window_lines(window_text)
                written = self.summarizer.grounded(limit, window_text, lines)
            else:
                written = self.summarizer.plain(limit, self._decode_ids)
        latency = time.perf_counter() - began
        return self._summary(written, counters, latency, window_text)

    def _summary(
        self, written: Draft, counters: StreamCounters, latency: float, window_text: str
    ) -> Summary:
        tpot = (latency - written.first_token_s) / max(1, written.generated_tokens - 1)
        self.summaries += 1
        self.timings.last_summary_ttft_s = written.first_token_s
        self.timings.last_summary_tpot_s = tpot
        return Summary(
            text=written.text,
            stream_tokens=counters.seen,
            window_first=counters.window_start(self.ring.layout),
            window_last=counters.head - 1 if counters.seen else -1,
            generated_tokens=written.generated_tokens,
            ttft_s=written.first_token_s,
            tpot_s=tpot,
            latency_s=latency,
            model=self.model_name,
            facts=written.facts,
            verification=written.verification,
            window_text=window_text,
        )

    # ------------------------------------------------------------ control

    def set_max_capacity(self, n: int) -> tuple[int, int]:
        """Resize live; returns (old, new). Refuses values the model or layout cannot take."""
        layout = self.ring.layout
        old = layout.max_capacity
        window = _window_for(n, layout.pinned)
        limit = int(self.loaded.model.config.max_position_embeddings)
        try:
            layout.with_window(window).check_positions(limit)
        except LayoutError as error:
            raise ConfigError(f"max_capacity = {n}: {error}") from None
        self.ring.set_window(window)
        self._fit_window_ids()
        return old, n

    def stats(self) -> SessionStats:
        layout, counters = self.ring.layout, self.counters()
        t = self.timings
        return SessionStats(
            model=self.model_name,
            device=str(self.loaded.device),
            dtype=str(self.loaded.dtype).removeprefix("torch."),
            pinned=layout.pinned,
            window=layout.window,
            max_capacity=layout.max_capacity,
            chunk=layout.chunk,
            used=layout.pinned + counters.visible(layout),
            cache_bytes=self.ring.nbytes(),
            tokens_ingested=counters.seen,
            tokens_evicted=counters.evicted(layout),
            position=counters.head,
            summaries=self.summaries,
            timings={
                "last_chunk_s": t.last_chunk_s,
                "last_chunk_tokens": float(t.last_chunk_tokens),
                "prefill_s_total": t.prefill_s_total,
                "last_summary_ttft_s": t.last_summary_ttft_s,
                "last_summary_tpot_s": t.last_summary_tpot_s,
            },
        )

    # ------------------------------------------------------------------ state

    def counters(self) -> StreamCounters:
        """The stream's counters since it began (a resumed ring starts at its window)."""
        ring = self.ring.counters()
        return StreamCounters(
            ring.stream_start - self._tokens_before_ring, ring.head, ring.kept_from
        )

    def window_token_ids(self) -> list[int]:
        """The stream tokens any query sees now, oldest first."""
        counters = self.counters()
        return self._window_ids.read(counters.window_start(self.ring.layout), counters.head)

    def _fit_window_ids(self) -> None:
        """A resize past the record's size reallocates it once, keeping the visible ids.
        (It never shrinks: growing the window again within the ring shows older tokens.)"""
        window = self.ring.layout.window
        if window > self._window_ids.capacity:
            counters = self.counters()
            self._window_ids.resize(window, counters.window_start(self.ring.layout), counters.head)

    def snapshot_state(self) -> SessionState:
        """Everything a restarted session needs to go on from here, as plain data."""
        layout, counters = self.ring.layout, self.counters()
        return SessionState(
            model=self.model_name,
            max_capacity=layout.max_capacity,
            chunk=layout.chunk,
            pinned=layout.pinned,
            system_prompt_sha256=text_digest(self.config.system_prompt),
            position=counters.head,
            tokens_ingested=counters.seen,
            summaries=self.summaries,
            window_ids=tuple(self.window_token_ids()),
        )

    def restore(self, state: SessionState) -> None:
        """Re-prefill a snapshot's window into the ring; the counters go on from it.

        The ring restarts with its origin P positions before the window, so the
        window tokens take their old absolute positions and the next stream token
        the position it would have had. Keys are recomputed from the window alone
        (what came before it is gone), which is what a fresh stream of those
        tokens would hold. The ring keeps its tensors, so captured graphs and the
        compiled steps stay valid. Raises ConfigError if the state does not
        fit this session; if the re-prefill itself fails, the session is left empty,
        not half restored, and the error raised.
        """
        check_restorable(state, self.ring.layout, int(self.loaded.model.config.vocab_size))
        try:
            self._restart_ring(origin=state.window_start - self.ring.layout.pinned)
            self._tokens_before_ring = state.tokens_ingested - len(state.window_ids)
            self.ingest_ids(list(state.window_ids))
        except BaseException:
            self._tokens_before_ring = 0
            self._restart_ring(origin=0)
            raise
        self.summaries = state.summaries

    def _restart_ring(self, origin: int) -> None:
        """An empty ring whose positions start at `origin`, the pinned prefix prefilled."""
        self.ring.reset(origin=origin)
        self.runner.prefix(self._tensor(self._prefix_ids))


def stream_lines(text: str) -> list[str]:
    """The lines of a message as the stream holds them: blank ones dropped."""
    return [line for line in text.splitlines() if line.strip()]


def _window_for(max_capacity: int, pinned: int) -> int:
    """W: what max_capacity leaves after the pinned prefix, at least one token."""
    if not isinstance(max_capacity, int) or max_capacity <= pinned:
        raise ConfigError(
            f"max_capacity = {max_capacity!r}: must be an integer above the pinned prefix of "
            f"{pinned} tokens (the system prompt); try {pinned + 512} or more"
        )
    return max_capacity - pinned
