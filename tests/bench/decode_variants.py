"""Compare decode-step variants at real shapes on a GPU (a benchmark tool, not a test).

python tests/bench/decode_variants.py smollm2-135m [llama3-8b ...]
For each variant: ms per back-to-back replayed step, TPOT as `generate` sees
it (the host loop included), kernels per step, and whether its greedy tokens
match the unfused step's. Also profiles one replayed ingest chunk.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch._dynamo
import torch._inductor.config as inductor_config
from torch.profiler import ProfilerActivity, profile

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.daemon.tools.bench.models import random_model

CHUNK = 2048
NEW_TOKENS = 128


def _events() -> tuple[torch.cuda.Event, torch.cuda.Event]:
    return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)


def _kernels_per_call(fn: Callable[[], None], calls: int = 5) -> tuple[float, Any]:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]
    return len(kernels) / calls, prof


def _streamed(model: Any, compile: bool) -> tuple[RingModel, torch.Tensor]:
    layout = CacheLayout.build(pinned=4, window=2044, chunk=CHUNK, scratch=48 + NEW_TOKENS)
    ring = build_ring_cache(model, layout)
    runner = RingModel(model, ring, cuda_graphs=True, compile=compile)
    ids = torch.randint(0, model.config.vocab_size, (3 * CHUNK + 4,), device="cuda")
    runner.prefix(ids[:4].unsqueeze(0))
    first = torch.empty(0)
    for s in range(4, ids.shape[0], CHUNK):
        first = runner.stream(ids[s : s + CHUNK].unsqueeze(0))[0, -1]
    return runner, first


def _profile_ingest(runner: RingModel, vocab: int) -> None:
    ids = torch.randint(0, vocab, (1, CHUNK), device="cuda")
    start, end = _events()
    start.record()
    for _ in range(10):
        runner.stream(ids)
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / 10
    print(f"  ingest chunk {CHUNK}: {ms:.2f} ms = {CHUNK / ms * 1000:,.0f} tok/s", flush=True)
    count, prof = _kernels_per_call(lambda: runner.stream(ids), 3)
    print(f"  ingest kernels per chunk: {count:.0f}")
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=70)
    )


def _variant(
    runner: RingModel,
    first: torch.Tensor,
    vocab: int,
    name: str,
    options: DecodeOptions,
) -> list[int]:
    ring = runner.ring
    decoder = StaticDecoder(runner, vocab, options)
    began = time.perf_counter()
    ring.begin_scratch()
    decoder.generate(first, 8)  # compile + capture
    ring.end_scratch()
    setup_s = time.perf_counter() - began
    tpots = []
    tokens: list[int] = []
    for _ in range(3):
        ring.begin_scratch()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        tokens = decoder.generate(first, NEW_TOKENS)
        total = time.perf_counter() - t0
        ring.end_scratch()
        tpots.append((total - (decoder.first_token_at - t0)) / (len(tokens) - 1) * 1000)
    ring.begin_scratch()
    runner.scratch(torch.zeros((1, 48), dtype=torch.long, device="cuda"))
    ring.arm_decode()
    graph = decoder._graph
    assert graph is not None
    replay_ms = 0.0
    for _ in range(4):  # 4 x 25 steps: a decoder holds at most scratch + 1 tokens
        decoder._step_index.zero_()
        ring.arm_decode()
        start, end = _events()
        start.record()
        for _ in range(25):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        replay_ms += start.elapsed_time(end) / 100
    decoder._step_index.zero_()
    kernels, prof = _kernels_per_call(graph.replay)
    ring.finish_decode(0)
    ring.end_scratch()
    print(
        f"  {name:28s} fused={decoder.fused!s:5s} replay {replay_ms:.3f} ms | generate TPOT "
        f"{min(tpots):.3f} ms (runs {', '.join(f'{t:.3f}' for t in tpots)}) | "
        f"{kernels:.0f} kernels/step | setup {setup_s:.0f} s",
        flush=True,
    )
    if "--kernels" in sys.argv:
        print(
            prof.key_averages().table(
                sort_by="cuda_time_total", row_limit=15, max_name_column_width=70
            )
        )
    return tokens


def main() -> None:
    shapes = [a for a in sys.argv[1:] if not a.startswith("--")] or ["smollm2-135m"]
    for shape in shapes:
        print(f"== {shape}", flush=True)
        model = random_model(shape, torch.device("cuda"), torch.bfloat16)
        vocab = model.config.vocab_size
        for compiled in (False, True) if "--eager-ingest" in sys.argv else (True,):
            began = time.perf_counter()
            runner, first = _streamed(model, compile=compiled)
            print(f"  ingest compile={compiled} (setup {time.perf_counter() - began:.0f} s)")
            _profile_ingest(runner, vocab)
        base = dict(stop_ids=frozenset(), compile=True)
        ref = _variant(runner, first, vocab, "hf forward", DecodeOptions(**base, fused=False))
        variants = {
            "fused, torch attention": DecodeOptions(**base, attention_op=False),
            "fused, attention op": DecodeOptions(**base),
        }
        for descent in (False, True):
            if descent and "--descent" not in sys.argv:
                continue
            inductor_config.coordinate_descent_tuning = descent
            for name, options in variants.items():
                name = f"{name}{' descent' if descent else ''}"
                tokens = _variant(runner, first, vocab, name, options)
                print(f"  same tokens as the hf forward: {tokens == ref}")
        inductor_config.coordinate_descent_tuning = False
        del runner, model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
