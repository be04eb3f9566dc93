"""One continuous model session over an unbounded stream: model + tokenizer + ring cache,
single-threaded by contract (the engine thread owns it). ingest() prefills in chunks of up
to C tokens, retrying a failed forward once in smaller pieces; summarize() decodes in
scratch slots and leaves the stream cache bit-identical; set_max_capacity() resizes live."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import structlog
import torch

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout, LayoutError, StreamCounters
from streamd.errors import ConfigError
from streamd.facts.tracker import FactsTracker

from ..snapshot import SessionState, check_restorable, text_digest
from .api import Deadline, Ingested, SessionStats, Summary, stream_lines
from .guided import GuidedDecoder, RequestShape, TokenGenerator, quote_token_ids
from .loading import LoadedModel, load_model
from .prompts import DEFAULT_SUMMARY_QUESTION, build_framing
from .session_config import SessionConfig, window_for
from .summarizer import Draft, PlainDecoder, Summarizer, SummaryText
from .window_ids import TokenWindow

log = structlog.get_logger(__name__)

OnChunk = Callable[[int, float], None]  # (tokens, seconds) after each stream forward pass
OnRetry = Callable[[str], None]  # "recovered" or "failed", once per batch that took the retry
RETRY_DIVISOR = 2  # the retry's pieces are chunk // RETRY_DIVISOR tokens
ERROR_CHARS = 300  # of the first failure's message, in the log


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
        c = config
        self.loaded = loaded or load_model(c.model, c.device, c.dtype, c.threads)
        self.model_name = self.loaded.name
        self.tokenizer = self.loaded.tokenizer
        framing = build_framing(self.tokenizer, config.system_prompt)
        encode = self.loaded.encode
        self._prefix_ids = encode(framing.prefix, allow_special=True)
        request_ids = encode(framing.summary_request, allow_special=True)
        self._summary_text = SummaryText(
            plain_request=request_ids,
            reply_open=encode(framing.reply_open, allow_special=True),
            echo_sources=(config.system_prompt, DEFAULT_SUMMARY_QUESTION),
        )
        self.facts = FactsTracker(profile=config.profile)
        layout = config.layout(len(self._prefix_ids), len(request_ids))
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
        config, gpu, model = self.config, self._on_gpu, self.loaded.model
        self.ring = build_ring_cache(model, layout, rebase_threshold=config.rebase_threshold)
        refresh = config.refresh
        self.runner = RingModel(model, self.ring, cuda_graphs=gpu, compile=gpu, refresh=refresh)
        self.decoder = StaticDecoder(
            self.runner,
            vocab=int(model.config.vocab_size),
            options=DecodeOptions(
                stop_ids=self.loaded.stop_ids(),
                repetition_penalty=config.repetition_penalty,
                temperature=config.temperature,
                # on a CPU a host check costs nothing beside a step: stop at a sentence end
                block=8 if gpu else 1,
                compile=gpu,
                weights=self.loaded.decode_weights,
            ),
        )
        self.summarizer = self._summarizer(self.decoder)
        self.runner.prefix(self.runner.ids(self._prefix_ids))

    def _summarizer(self, static: StaticDecoder) -> Summarizer:
        config = self.config
        generator: TokenGenerator = static
        loaded = self.loaded
        if config.decode == "plain":
            penalty, temperature = config.repetition_penalty, config.temperature
            generator = PlainDecoder(self.runner, loaded.stop_ids(), penalty, temperature)
        graphs = self.runner.cuda_graphs
        shape = RequestShape(config.summary_request_tokens, self._newline(), graphs, graphs)
        text_ids = functools.partial(loaded.encode, allow_special=False)
        quotes = quote_token_ids(self.tokenizer, int(loaded.model.config.vocab_size))
        guided = GuidedDecoder(
            self.runner, generator, text_ids, loaded.encode_many, loaded.decode, shape, quotes
        )
        policy = "flag" if config.unsupported == "flag" else "drop-sentence"
        return Summarizer(self.runner, generator, guided, self._summary_text, self.facts, policy)

    def _newline(self) -> int:
        return (self.loaded.encode("\n", allow_special=False)[:1] or [0])[0]

    def _warm_up(self) -> None:
        """Compile and capture a stream chunk and a summary at start, not mid-stream (tens
        of seconds on a GPU); the ring then restarts empty on the same tensors (graphs
        stay valid), as a fresh session would be."""
        filler = [self._newline()] * self.ring.layout.chunk
        self.runner.stream(self.runner.ids(filler))
        self.summarize()
        self._restart_ring(origin=0)
        self.summaries = 0
        self.timings = _Timings()

    # ----------------------------------------------------------------- stream

    def tokenize_stream(self, text: str) -> list[int]:
        """One message = one or more lines; every line ends in a newline token."""
        lines = stream_lines(text)
        if not lines:
            return []
        return self.loaded.encode("\n".join(lines) + "\n", allow_special=False)

    def ingest(
        self, text: str, on_chunk: OnChunk | None = None, on_retry: OnRetry | None = None
    ) -> Ingested:
        """Tokenize and prefill `text`, then hand its lines to the facts miner.

        A failed forward pass (CUDA out of memory above all: a chunk's activations grow
        with its length) is logged and the rest of the batch, from the token where it
        failed, is prefilled once more in pieces of half a chunk (the ring commits only
        a chunk whose forward finished: nothing twice, nothing skipped). If that fails
        too, the error is raised. A tokenizer failure is not retried."""
        ids = self.tokenize_stream(text)
        done = _Progress(on_chunk)
        failure = self._attempt(ids, done)
        if failure is not None:
            self._retry_smaller(ids[done.tokens :], done, failure, on_retry or _ignore)
        self.facts.observe(stream_lines(text))  # only what the ring took in
        return Ingested(tokens=len(ids), retried=failure is not None)

    def _attempt(self, ids: list[int], done: _Progress) -> _Failure | None:
        try:
            self.ingest_ids(ids, done)
        except Exception as error:
            # Only a description leaves this block: the exception's traceback holds the
            # failed forward's frames, and through them its activations, which are the
            # memory an out-of-memory retry needs back.
            text = f"{type(error).__name__}: {error}"[:ERROR_CHARS]
            return _Failure(text, isinstance(error, torch.cuda.OutOfMemoryError))
        return None

    def _retry_smaller(
        self, rest: list[int], done: _Progress, failure: _Failure, on_retry: OnRetry
    ) -> None:
        if failure.out_of_memory:
            torch.cuda.empty_cache()  # PyTorch's cached blocks, back for the retry
        piece = max(1, self.ring.layout.chunk // RETRY_DIVISOR)
        log.warning(
            "prefill failed; retrying the rest of the batch once in smaller pieces",
            error=failure.text,
            tokens_done=done.tokens,
            tokens_left=len(rest),
            piece_tokens=piece,
        )
        try:
            for start in range(0, len(rest), piece):
                self.ingest_ids(rest[start : start + piece], done)
        except Exception:
            on_retry("failed")
            raise
        on_retry("recovered")

    def ingest_ids(self, ids: list[int], on_chunk: OnChunk | None = None) -> None:
        """Prefill stream token ids in chunks of up to C."""
        chunk = self.ring.layout.chunk
        for start in range(0, len(ids), chunk):
            piece = ids[start : start + chunk]
            first = self.ring.head
            began = time.perf_counter()
            self.runner.stream(self.runner.ids(piece))
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
        return self.loaded.decode(self.window_token_ids())

    def _window_lines(self, text: str) -> list[str]:
        """The window's whole lines: once tokens were evicted, the first may be a part."""
        lines = stream_lines(text)
        return lines[1:] if self.counters().evicted(self.ring.layout) else lines

    def summarize(
        self,
        max_new_tokens: int | None = None,
        grounded: bool | None = None,
        deadline: Deadline | None = None,
    ) -> Summary:
        """A summary after the stream head; the stream cache is left bit-identical.
        Grounded (by default, the configured summary_mode): on the facts, checked
        (summarizer.py); else the bare question. It ends at `deadline` (time_limited)."""
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
                written = self.summarizer.grounded(limit, window_text, lines, deadline)
            else:
                written = self.summarizer.plain(limit, self.loaded.decode, deadline)
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
            time_limited=written.time_limited,
        )

    # ------------------------------------------------------------ control

    def set_max_capacity(self, n: int) -> tuple[int, int]:
        """Resize live; returns (old, new). Refuses values the model or layout cannot take."""
        layout = self.ring.layout
        old = layout.max_capacity
        window = window_for(n, layout.pinned)
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
        return SessionStats(
            model=self.model_name,
            device=str(self.loaded.device),
            dtype=self.loaded.precision,
            threads=torch.get_num_threads(),
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
            decode=self.decoder.path,
            refresh_every=self.runner.refresh_every,
            refreshes=self.runner.refreshes,
            timings={name: float(value) for name, value in asdict(self.timings).items()},
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
            model=self.config.model,  # as configured ("default"): what a restart compares
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
        """Re-prefill a snapshot's window at its old positions (keys recomputed from the
        window alone, as a fresh stream of it would hold); the counters go on from it.
        The ring keeps its tensors (captured graphs stay valid). ConfigError: the state
        does not fit; a failed re-prefill leaves the session empty, and is raised."""
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
        self.runner.prefix(self.runner.ids(self._prefix_ids))


@dataclass(frozen=True)
class _Failure:
    text: str
    out_of_memory: bool


class _Progress:
    """The on_chunk callback, counting the tokens whose forward pass finished."""

    def __init__(self, on_chunk: OnChunk | None) -> None:
        self.tokens = 0
        self._on_chunk = on_chunk

    def __call__(self, tokens: int, seconds: float) -> None:
        self.tokens += tokens
        if self._on_chunk is not None:
            self._on_chunk(tokens, seconds)


def _ignore(outcome: str) -> None:
    pass
