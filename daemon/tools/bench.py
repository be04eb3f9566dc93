"""`streamd bench`: the HF dense baseline against streamd, one process, one device, same tokens.

Rows (the earlier StreamingLLM experiment's table): PPL, memory, decode
throughput, TTFT and TPOT, for a prompt of `prompt_tokens` and `new_tokens`
generated greedily. Then ingest rate and memory at growing stream lengths for
both sides, and the summary TTFT (instruction prefill + first token).

`--shape` builds random weights of a named shape (speed at real sizes, no
download; PPL is then meaningless and reported as null); `--model` uses real
weights.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache, cache_kwarg_name, max_positions
from streamd.cache.layout import CacheLayout
from streamd.cache.ring import SinkMode

from .evaluate import perplexity, stream_nll

Progress = Callable[[str], None]

SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "vocab_size": 49152,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "tie_word_embeddings": True,
    },
    "llama3-8b": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
    },
    "tiny": {  # CPU smoke tests
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 512,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
    },
}


@dataclass(frozen=True)
class BenchOptions:
    prompt_tokens: int = 1024
    new_tokens: int = 128
    max_capacity: int = 256  # the experiment's setting, for the rows
    sinks: int = 4
    stream_capacity: int = 2048  # the streaming session's max_capacity for the scaling table
    chunk: int = 2048
    baseline_chunk: int = 512
    scaling: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    baseline_budget_s: float = 60.0  # stop the dense baseline's scaling past this
    summary_instruction_tokens: int = 48
    repeats: int = 5
    # torch.compile the decode step and the prefill forwards before capturing their graphs
    compile: bool = False
    rows_chunks: int = 4  # the rows' prompt is streamed in this many equal chunks
    rate_chunks: int = 16  # each scaling checkpoint's rate: this many chunks, timed


@dataclass
class BenchReport:
    device: str
    model: str
    dtype: str
    weights_bytes: int
    copy_bandwidth_gb_s: float
    decode_floor_ms: float
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    summary_ttft_s: float = 0.0
    decode_equal: bool | None = None
    # Memory the rows' CUDA graphs reserve for their intermediates. A replay does not go
    # through the allocator, so the Memory row (peak allocated, as in the experiment)
    # does not see it; the baseline's intermediates are in its peak.
    streamd_graph_pool_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


# ---------------------------------------------------------------- devices


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def allocated_mb(device: torch.device) -> float:
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


@contextmanager
def peak_mb(device: torch.device, out: dict[str, float]) -> Iterator[None]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    out["peak"] = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def release_cached_memory(device: torch.device) -> None:
    """Free what one side left cached: its cuBLAS workspace (32 MiB per stream on a
    Hopper GPU) and the allocator's cache. The other side's peak then counts only the
    workspace it allocates itself, as the first side's peak counted its own."""
    if device.type != "cuda":
        return
    torch.cuda.synchronize(device)
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


def graph_pools_mb(device: torch.device) -> float:
    """MB reserved by the live CUDA graphs' pools (the allocator's non-default pools)."""
    if device.type != "cuda":
        return 0.0
    segments = torch.cuda.memory._snapshot(device)["segments"]
    pooled = [s["total_size"] for s in segments if tuple(s["segment_pool_id"]) != (0, 0)]
    return sum(pooled) / 2**20


def copy_bandwidth_gb_s(device: torch.device) -> float:
    """Device-to-device copy, bytes read + written per second (the decode ceiling)."""
    size = 2**30 if device.type == "cuda" else 2**26
    src = torch.empty(size, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    began, reps = now(device), 10
    for _ in range(reps):
        dst.copy_(src)
    seconds = now(device) - began
    return 2 * size * reps / seconds / 1e9


# ------------------------------------------------------------------ model


def random_model(shape: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def weights_bytes(model: Any) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.data_ptr() not in seen:  # tied embeddings count once
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


def use_attention(model: Any, name: str) -> None:
    model.set_attn_implementation(name)


# --------------------------------------------------------------- baseline


@torch.inference_mode()
def baseline_generate(
    model: Any, prompt: torch.Tensor, new_tokens: int, repeats: int
) -> tuple[float, float]:
    """HF generate, dense DynamicCache, greedy: (TTFT s as the median of repeats, TPOT s)."""
    use_attention(model, "sdpa")
    device = prompt.device
    args = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    model.generate(prompt, max_new_tokens=2, min_new_tokens=2, **args)  # warm-up
    ttfts = []
    for _ in range(repeats):
        began = now(device)
        model.generate(prompt, max_new_tokens=1, min_new_tokens=1, **args)
        ttfts.append(now(device) - began)
    ttft = statistics.median(ttfts)
    began = now(device)
    model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **args)
    total = now(device) - began
    return ttft, (total - ttft) / (new_tokens - 1)


@torch.inference_mode()
def baseline_ppl(model: Any, ids: torch.Tensor) -> float:
    use_attention(model, "sdpa")
    logits = model(ids.unsqueeze(0)).logits[0, :-1].float()
    return perplexity(torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none"))


@torch.inference_mode()
def baseline_scaling(
    model: Any,
    ids_for: Callable[[int, int], torch.Tensor],
    options: BenchOptions,
    progress: Progress,
) -> dict[int, dict[str, Any] | None]:
    """Dense DynamicCache ingest in chunks; rate over the last half before each checkpoint."""
    from transformers import DynamicCache

    use_attention(model, "sdpa")
    device = next(model.parameters()).device
    trained = max_positions(model.config)
    cache = DynamicCache(config=model.config)
    results: dict[int, dict[str, Any] | None] = {}
    done, began_all = 0, time.perf_counter()
    for checkpoint in options.scaling:
        half = done + (checkpoint - done) // 2
        try:
            done = _dense_ingest(model, cache, ids_for, done, half, options.baseline_chunk)
            t0 = now(device)
            start = done
            done = _dense_ingest(model, cache, ids_for, done, checkpoint, options.baseline_chunk)
            rate = (done - start) / (now(device) - t0)
        except torch.OutOfMemoryError:
            results[checkpoint] = {"failed": "OOM"}
            progress(f"baseline: OOM before {checkpoint} tokens")
            break
        results[checkpoint] = {
            "memory_mb": allocated_mb(device),
            "ingest_tok_s": rate,
            "beyond_context": checkpoint > trained,
        }
        progress(f"baseline: {checkpoint} tokens, {rate:,.0f} tok/s")
        if _past_budget(time.perf_counter() - began_all, checkpoint, options):
            break
    return results


def _past_budget(elapsed_s: float, checkpoint: int, options: BenchOptions) -> bool:
    """Whether the dense baseline should stop before the next checkpoint: its attention
    is quadratic, so the time so far, scaled by the square of the length ratio, projects
    the next checkpoint's cost."""
    later = [n for n in options.scaling if n > checkpoint]
    if not later:
        return True
    return elapsed_s * (later[0] / checkpoint) ** 2 > options.baseline_budget_s


def _dense_ingest(
    model: Any,
    cache: Any,
    ids_for: Callable[[int, int], torch.Tensor],
    start: int,
    end: int,
    chunk: int,
) -> int:
    for s in range(start, end, chunk):
        e = min(end, s + chunk)
        model(
            input_ids=ids_for(s, e).unsqueeze(0),
            use_cache=True,
            logits_to_keep=1,
            **{cache_kwarg_name(model): cache},
        )
    return end


# ---------------------------------------------------------------- streamd


def streamd_layout(options: BenchOptions, capacity: int, chunk: int) -> CacheLayout:
    return CacheLayout.build(
        pinned=options.sinks,
        window=capacity - options.sinks,
        chunk=chunk,
        scratch=options.summary_instruction_tokens + options.new_tokens,
    )


def ingest_chunks(runner: RingModel, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Stream ids [N] in chunks; returns the last chunk's last-position logits [vocab]."""
    logits = torch.empty(0)
    for s in range(0, ids.shape[0], chunk):
        logits = runner.stream(ids[s : s + chunk].unsqueeze(0))[0, -1]
    return logits


@torch.inference_mode()
def streamd_generate(
    model: Any, prompt: torch.Tensor, options: BenchOptions, graph: bool
) -> tuple[float, float, list[int], float, float]:
    """Prompt streamed through the ring, then the static decoder:
    (TTFT, TPOT, tokens, peak MB, MB reserved by the graphs' pool).

    The prompt after the sinks is `rows_chunks` full chunks, so on a GPU every forward
    is a replayed CUDA graph; the first of two runs captures them, the second is timed.
    """
    device = prompt.device
    layout = rows_layout(options)
    ring = build_ring_cache(model, layout)
    runner = RingModel(model, ring, cuda_graphs=graph, compile=graph and options.compile)
    decoder = StaticDecoder(
        runner,
        model.config.vocab_size,
        DecodeOptions(frozenset(), cuda_graph=graph, compile=graph and options.compile),
    )
    memory: dict[str, float] = {}
    for attempt in range(2):
        ring.reset()
        with peak_mb(device, memory) if attempt else nullcontext():
            began = now(device)
            runner.prefix(prompt[: options.sinks].unsqueeze(0))
            first = ingest_chunks(runner, prompt[options.sinks :], layout.chunk)
            ring.begin_scratch()
            tokens = decoder.generate(first, options.new_tokens)
            total = now(device) - began
            ring.end_scratch()
    ttft = decoder.first_token_at - began
    tpot = (total - ttft) / max(1, len(tokens) - 1)
    return ttft, tpot, tokens, memory.get("peak", 0.0), graph_pools_mb(device)


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
    runner = RingModel(model, ring)
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
    runner = RingModel(model, ring, cuda_graphs=graph, compile=graph and options.compile)
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


# ------------------------------------------------------------------- run


def run_bench(
    model: Any,
    model_name: str,
    ids: torch.Tensor,
    options: BenchOptions,
    real_weights: bool,
    progress: Progress,
) -> BenchReport:
    """ids: [T] real text tokens (or random ones) on the model's device, T >= prompt_tokens."""
    device = ids.device
    param = next(model.parameters())
    bandwidth = copy_bandwidth_gb_s(device)
    wbytes = weights_bytes(model)
    report = BenchReport(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        model=model_name,
        dtype=str(param.dtype).removeprefix("torch."),
        weights_bytes=wbytes,
        copy_bandwidth_gb_s=bandwidth,
        decode_floor_ms=wbytes / (bandwidth * 1e9) * 1000,
    )
    prompt = ids[: options.prompt_tokens]
    graph = device.type == "cuda"

    progress("rows: HF dense baseline (generate, DynamicCache)")
    memory: dict[str, float] = {}
    with peak_mb(device, memory):
        base_ttft, base_tpot = baseline_generate(
            model, prompt.unsqueeze(0), options.new_tokens, options.repeats
        )
    base_mem = memory["peak"]
    release_cached_memory(device)
    progress("rows: streamd (ring cache, static decode" + (", CUDA graph)" if graph else ")"))
    ttft, tpot, tokens, mem, report.streamd_graph_pool_mb = streamd_generate(
        model, prompt, options, graph
    )
    report.decode_equal = tokens == plain_tokens(model, prompt, options)
    base_ppl = sinks_ppl = None
    if real_weights:
        base_ppl = baseline_ppl(model, prompt)
        layout = CacheLayout.build(
            pinned=options.sinks,
            window=options.max_capacity - options.sinks,
            chunk=min(options.chunk, 64),
            scratch=0,
        )
        sinks_ppl = perplexity(
            stream_nll(model, prompt, layout, SinkMode.REROTATE, lambda _: None, "sinks")
        )
    else:
        report.notes.append("random weights: PPL not meaningful, reported as null")
    report.rows = {
        "ppl": {"baseline": base_ppl, "streamd": sinks_ppl},
        "memory_mb": {"baseline": base_mem, "streamd": mem},
        "throughput_tok_s": {"baseline": 1 / base_tpot, "streamd": 1 / tpot},
        "ttft_s": {"baseline": base_ttft, "streamd": ttft},
        "tpot_ms": {"baseline": base_tpot * 1000, "streamd": tpot * 1000},
    }

    def ids_for(start: int, end: int) -> torch.Tensor:
        # Cycle the text: any stream length from one token sequence.
        index = torch.arange(start, end, device=device) % ids.shape[0]
        return ids[index]

    progress("scaling: streamd")
    ours, report.summary_ttft_s = streamd_scaling(model, ids_for, options, progress)
    progress("scaling: HF dense baseline (stops at OOM or the time budget)")
    torch.cuda.empty_cache() if device.type == "cuda" else None
    theirs = baseline_scaling(model, ids_for, options, progress)
    report.scaling = [
        {"tokens": n, "baseline": theirs.get(n), "streamd": ours[n]} for n in options.scaling
    ]
    return report


def change(baseline: float | None, ours: float | None) -> str:
    if baseline is None or ours is None or baseline == 0 or math.isnan(baseline):
        return "-"
    return f"{(ours / baseline - 1) * 100:+.1f}%"


def render(report: BenchReport) -> str:
    def fmt(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    lines = [
        f"device {report.device} | model {report.model} ({report.dtype}) | weights "
        f"{report.weights_bytes / 1e9:.3f} GB | copy bandwidth {report.copy_bandwidth_gb_s:,.0f} "
        f"GB/s | decode floor {report.decode_floor_ms:.3f} ms",
        "",
        f"{'':<18}{'baseline':>12}{'streamd':>12}{'change':>10}",
    ]
    labels = {
        "ppl": ("PPL (lower better)", 2),
        "memory_mb": ("Memory (MB)", 0),
        "throughput_tok_s": ("Throughput (t/s)", 1),
        "ttft_s": ("TTFT (s)", 4),
        "tpot_ms": ("TPOT (ms)", 3),
    }
    for key, (label, digits) in labels.items():
        row = report.rows[key]
        lines.append(
            f"{label:<18}{fmt(row['baseline'], digits):>12}{fmt(row['streamd'], digits):>12}"
            f"{change(row['baseline'], row['streamd']):>10}"
        )
    lines += [
        "",
        f"{'stream tokens':<14}{'baseline tok/s':>16}{'MB':>10}{'streamd tok/s':>16}{'MB':>10}",
    ]
    for entry in report.scaling:
        base: dict[str, Any] | None = entry["baseline"]
        if base is None:
            b_rate, b_mem = "not run", ""
        elif "failed" in base:
            b_rate, b_mem = base["failed"], ""
        else:
            mark = " *" if base.get("beyond_context") else ""
            b_rate, b_mem = f"{base['ingest_tok_s']:,.0f}{mark}", f"{base['memory_mb']:,.0f}"
        ours: dict[str, Any] = entry["streamd"]
        lines.append(
            f"{entry['tokens']:<14,}{b_rate:>16}{b_mem:>10}{ours['ingest_tok_s']:>16,.0f}"
            f"{ours['memory_mb']:>10,.0f}"
        )
    lines += [
        "  * beyond the model's trained context",
        "",
        f"summary TTFT (instruction prefill + first token): {report.summary_ttft_s * 1000:.2f} ms",
        f"fast decode == plain decode (greedy tokens): {report.decode_equal}",
    ]
    if report.device != "cpu":
        lines.append(
            f"streamd's CUDA graphs reserve {report.streamd_graph_pool_mb:,.0f} MB beyond the "
            "Memory row's peak allocated (their intermediates: a replay bypasses the allocator)"
        )
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
