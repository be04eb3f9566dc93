"""The HF dense baseline: `generate` and ingest over a DynamicCache, SDPA attention."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from streamd.cache.hf import cache_kwarg_name, max_positions

from ..evaluate import perplexity
from .device import allocated_mb, now
from .options import BenchOptions, Progress


def use_attention(model: Any, name: str) -> None:
    model.set_attn_implementation(name)


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
