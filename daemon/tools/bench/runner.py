"""One bench run: the rows of the earlier StreamingLLM experiment's table (PPL, memory,
throughput, TTFT, TPOT) for both sides, then ingest rate and memory at growing stream
lengths, then the summary TTFT. `--shape` weights are random: PPL is reported as null."""

from __future__ import annotations

from typing import Any

import torch

from streamd.cache.layout import CacheLayout
from streamd.cache.ring import SinkMode

from ..evaluate import perplexity, stream_nll
from .baseline import baseline_generate, baseline_ppl, baseline_scaling
from .device import copy_bandwidth_gb_s, memory_unit, peak_mb, release_cached_memory
from .models import BenchModels, weights_bytes
from .options import BenchOptions, Progress
from .report import BenchReport
from .streamd_side import plain_tokens, streamd_generate, streamd_scaling


def run_bench(
    models: BenchModels, ids: torch.Tensor, options: BenchOptions, progress: Progress
) -> BenchReport:
    """ids: [T] real text tokens (or random ones) on the models' device, T >= prompt_tokens."""
    report = _new_report(models, ids.device)
    report.max_capacity = options.max_capacity
    report.stream_capacity, report.chunk = options.stream_capacity, options.chunk
    _measure_rows(report, models, ids[: options.prompt_tokens], options, progress)
    _measure_scaling(report, models, ids, options, progress)
    return report


def _measure_rows(
    report: BenchReport,
    models: BenchModels,
    prompt: torch.Tensor,
    options: BenchOptions,
    progress: Progress,
) -> None:
    device = prompt.device
    graph = device.type == "cuda"
    model, baseline = models.streamd.model, models.baseline.model
    progress(f"rows: HF dense baseline (generate, DynamicCache, {models.baseline.precision})")
    memory: dict[str, float] = {}
    with peak_mb(device, memory):
        base_ttft, base_tpot = baseline_generate(
            baseline, prompt.unsqueeze(0), options.new_tokens, options.repeats
        )
    release_cached_memory(device)
    how = "CUDA graph, " if graph else ""
    progress(f"rows: streamd (ring cache, static decode, {how}{models.streamd.precision})")
    ours = streamd_generate(model, prompt, options, graph, models.streamd.decode_weights)
    report.streamd_graph_pool_mb = ours.graph_pool_mb
    if ours.prompt_s is not None:
        report.streamd_prompt_tok_s = options.prompt_tokens / ours.prompt_s
    _check_decode(report, ours.tokens, plain_tokens(model, prompt, options), models)
    base_ppl = sinks_ppl = None
    if models.real_weights:
        base_ppl = baseline_ppl(baseline, prompt)
        sinks_ppl = _sinks_ppl(model, prompt, options)
    else:
        report.notes.append("random weights: PPL not meaningful, reported as null")
    report.rows = {
        "ppl": {"baseline": base_ppl, "streamd": sinks_ppl},
        "memory_mb": {"baseline": memory["peak"], "streamd": ours.peak_mb},
        "throughput_tok_s": {"baseline": 1 / base_tpot, "streamd": 1 / ours.tpot_s},
        "ttft_s": {"baseline": base_ttft, "streamd": ours.ttft_s},
        "tpot_ms": {"baseline": base_tpot * 1000, "streamd": ours.tpot_s * 1000},
    }


def _measure_scaling(
    report: BenchReport,
    models: BenchModels,
    ids: torch.Tensor,
    options: BenchOptions,
    progress: Progress,
) -> None:
    device = ids.device

    def ids_for(start: int, end: int) -> torch.Tensor:
        # Cycle the text: any stream length from one token sequence.
        index = torch.arange(start, end, device=device) % ids.shape[0]
        return ids[index]

    progress("scaling: streamd")
    ours, report.summary_ttft_s = streamd_scaling(models.streamd.model, ids_for, options, progress)
    progress("scaling: HF dense baseline (stops at OOM or the time budget)")
    torch.cuda.empty_cache() if device.type == "cuda" else None
    theirs = baseline_scaling(models.baseline.model, ids_for, options, progress)
    report.scaling = [
        {"tokens": n, "baseline": theirs.get(n), "streamd": ours[n]} for n in options.scaling
    ]


def _new_report(models: BenchModels, device: torch.device) -> BenchReport:
    bandwidth = copy_bandwidth_gb_s(device)
    wbytes = weights_bytes(models.streamd.model)
    rows_unit, scaling_unit = memory_unit(device)
    return BenchReport(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        model=models.streamd.name,
        dtype=models.streamd.precision,
        weights_bytes=wbytes,
        copy_bandwidth_gb_s=bandwidth,
        decode_floor_ms=wbytes / (bandwidth * 1e9) * 1000,
        decode_weights=models.streamd.decode_weights,
        baseline_dtype=models.baseline.precision,
        baseline_weights_bytes=weights_bytes(models.baseline.model) if models.separate else 0,
        threads=torch.get_num_threads(),
        memory_unit=rows_unit,
        scaling_memory_unit=scaling_unit,
    )


def _sinks_ppl(model: Any, prompt: torch.Tensor, options: BenchOptions) -> float:
    layout = CacheLayout.build(
        pinned=options.sinks,
        window=options.max_capacity - options.sinks,
        chunk=min(options.chunk, 64),
        scratch=0,
    )
    return perplexity(stream_nll(model, prompt, layout, SinkMode.REROTATE, lambda _: None, "sinks"))


def _check_decode(
    report: BenchReport, fast: list[int], plain: list[int], models: BenchModels
) -> None:
    """Whether the fast decoder's greedy tokens are the plain forward's. With int4 decode
    weights they may part (the plain forward multiplies by the model's own weights)."""
    report.decode_equal = fast == plain
    weights = models.streamd.decode_weights
    if weights != "model" and not report.decode_equal:
        same = next(
            (i for i, (a, b) in enumerate(zip(fast, plain, strict=False)) if a != b), len(fast)
        )
        report.notes.append(
            f"fast decode uses {weights} copies of the weights, the plain decode the model's "
            f"own: their greedy tokens agree for the first {same} of {len(fast)}"
        )
