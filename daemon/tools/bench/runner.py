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
from .device import copy_bandwidth_gb_s, peak_mb, release_cached_memory
from .models import weights_bytes
from .options import BenchOptions, Progress
from .report import BenchReport
from .streamd_side import plain_tokens, streamd_generate, streamd_scaling


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
