"""streamd's side of the bench: the prompt streamed through the ring, the static decoder,
ingest rate at growing stream lengths and the summary TTFT."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.cache.ring import StreamCache

from .device import allocated_mb, graph_pools_mb, now, peak_mb
from .options import BenchOptions, Progress


def streamd_layout(options: BenchOptions, capacity: int, chunk: int) -> CacheLayout:
    return CacheLayout.build(
        pinned=options.sinks,
        window=capacity - options.sinks,
        chunk=chunk,
        scratch=options.summary_instruction_tokens + options.new_tokens,
    )


def _runner(model: Any, ring: StreamCache, options: BenchOptions, graph: bool) -> RingModel:
    compile = graph and options.compile
    return RingModel(model, ring, cuda_graphs=graph, compile=compile, refresh=options.refresh)


def ingest_chunks(runner: RingModel, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Stream ids [N] in chunks; returns the last chunk's last-position logits [vocab]."""
    logits = torch.empty(0)
    for s in range(0, ids.shape[0], chunk):
        logits = runner.stream(ids[s : s + chunk].unsqueeze(0))[0, -1]
    return logits


@dataclass(frozen=True)
class Generated:
    """streamd's rows: the prompt streamed through the ring, then the static decoder."""

    ttft_s: float
    tpot_s: float
    # The prompt through the ring, to its last logits, on a CPU; None on a GPU, where
    # waiting for it would hold back the decode step's launch.
    prompt_s: float | None
    tokens: list[int]
    peak_mb: float
    graph_pool_mb: float  # reserved by the CUDA graphs' pool


@torch.inference_mode()
def streamd_generate(
    model: Any,
    prompt: torch.Tensor,
    options: BenchOptions,
    graph: bool,
    decode_weights: str = "model",
) -> Generated:
    """The prompt after the sinks is `rows_chunks` full chunks, so on a GPU every forward
    is a replayed CUDA graph; the first of two runs captures them, the second is timed.
    decode_weights: the decode step's weights (DecodeOptions.weights: "model" or "int4")."""
    device = prompt.device
    layout = rows_layout(options)
    ring = build_ring_cache(model, layout)
    runner = _runner(model, ring, options, graph)
    decoder = StaticDecoder(
        runner,
        model.config.vocab_size,
        DecodeOptions(
            frozenset(),
            cuda_graph=graph,
            compile=graph and options.compile,
            weights=decode_weights,
        ),
    )
    memory: dict[str, float] = {}
    for attempt in range(2):
        ring.reset()
        with peak_mb(device, memory) if attempt else nullcontext():
            began = now(device)
            runner.prefix(prompt[: options.sinks].unsqueeze(0))
            first = ingest_chunks(runner, prompt[options.sinks :], layout.chunk)
            prompt_s = now(device) - began if device.type == "cpu" else None
            ring.begin_scratch()
            tokens = decoder.generate(first, options.new_tokens)
            total = now(device) - began
            ring.end_scratch()
    ttft = decoder.first_token_at - began
    return Generated(
        ttft_s=ttft,
        tpot_s=(total - ttft) / max(1, len(tokens) - 1),
        prompt_s=prompt_s,
        tokens=tokens,
        peak_mb=memory.get("peak", 0.0),
        graph_pool_mb=graph_pools_mb(device),
    )


def rows_layout(options: BenchOptions) -> CacheLayout:
    """The rows' ring: the prompt after the sinks fits `rows_chunks` full chunks, each a
    replayed graph; smaller chunks than one for the whole prompt keep activations small."""
    return CacheLayout.build(
        pinned=options.sinks,
        window=options.max_capacity - options.sinks,
        chunk=-(-(options.prompt_tokens - options.sinks) // options.rows_chunks),
        scratch=options.new_tokens + 1,
    )


@torch.inference_mode()
def plain_tokens(model: Any, prompt: torch.Tensor, options: BenchOptions) -> list[int]:
    """The same greedy tokens through one ordinary forward per token (the reference)."""
    layout = rows_layout(options)
    ring = build_ring_cache(model, layout)
    runner = _runner(model, ring, options, graph=False)
    runner.prefix(prompt[: options.sinks].unsqueeze(0))
    token = int(ingest_chunks(runner, prompt[options.sinks :], layout.chunk).argmax())
    tokens = [token]
    ring.begin_scratch()
    while len(tokens) < options.new_tokens:
        token = int(runner.scratch(torch.tensor([[token]], device=prompt.device))[0, -1].argmax())
        tokens.append(token)
    ring.end_scratch()
    return tokens


@torch.inference_mode()
def streamd_scaling(
    model: Any,
    ids_for: Callable[[int, int], torch.Tensor],
    options: BenchOptions,
    progress: Progress,
) -> tuple[dict[int, dict[str, Any]], float]:
    """Stream full chunks to each checkpoint, then time `rate_chunks` more chunks: the
    rate at N tokens is measured over the same amount of work at every checkpoint."""
    device = next(model.parameters()).device
    chunk = options.chunk
    layout = streamd_layout(options, options.stream_capacity, chunk)
    ring = build_ring_cache(model, layout)
    graph = device.type == "cuda"
    runner = _runner(model, ring, options, graph)
    runner.prefix(ids_for(0, options.sinks).unsqueeze(0))
    _ring_ingest(runner, ids_for, 0, 3 * chunk, chunk)  # warm-up, graph capture
    ring.reset()
    runner.prefix(ids_for(0, options.sinks).unsqueeze(0))
    seen = 0
    results: dict[int, dict[str, Any]] = {}
    for checkpoint in options.scaling:
        seen = _ring_ingest(runner, ids_for, seen, max(seen, checkpoint), chunk)
        t0, start = now(device), seen
        seen = _ring_ingest(runner, ids_for, seen, seen + options.rate_chunks * chunk, chunk)
        rate = (seen - start) / (now(device) - t0)
        results[checkpoint] = {"memory_mb": allocated_mb(device), "ingest_tok_s": rate}
        progress(f"streamd: {checkpoint} tokens, {rate:,.0f} tok/s")
    return results, summary_ttft(runner, ids_for, options)


def _ring_ingest(
    runner: RingModel,
    ids_for: Callable[[int, int], torch.Tensor],
    start: int,
    end: int,
    chunk: int,
) -> int:
    """Full chunks from `start` until at least `end` stream tokens; returns the count."""
    offset = runner.ring.stream_start
    while start < end:
        runner.stream(ids_for(offset + start, offset + start + chunk).unsqueeze(0))
        start += chunk
    return start


def summary_ttft(
    runner: RingModel, ids_for: Callable[[int, int], torch.Tensor], options: BenchOptions
) -> float:
    """Instruction prefill + first token after a long stream (median of repeats)."""
    ring, device = runner.ring, runner.ring.device
    instruction = ids_for(0, options.summary_instruction_tokens).unsqueeze(0)
    times = []
    for _ in range(options.repeats + 1):
        ring.begin_scratch()
        began = now(device)
        int(runner.scratch(instruction)[0, -1].argmax())
        times.append(time.perf_counter() - began)
        ring.end_scratch()
    return statistics.median(times[1:])
