"""Profile one replayed decode step at a real shape (a benchmark tool, not a test).

python tests/bench/profile_decode.py smollm2-135m [--compile]
Prints the ms per replayed step and the CUDA kernels that take the time.
"""

from __future__ import annotations

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.daemon.bench import random_model


def main() -> None:
    shape = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m"
    compiled = "--compile" in sys.argv
    model = random_model(shape, torch.device("cuda"), torch.bfloat16)
    layout = CacheLayout.build(pinned=4, window=2044, chunk=2048, scratch=176)
    runner = RingModel(model, build_ring_cache(model, layout), cuda_graphs=True)
    ids = torch.randint(0, model.config.vocab_size, (3 * 2048 + 4,), device="cuda")
    runner.prefix(ids[:4].unsqueeze(0))
    for s in range(4, ids.shape[0], 2048):
        first = runner.stream(ids[s : s + 2048].unsqueeze(0))[0, -1]
    options = DecodeOptions(frozenset(), cuda_graph=True, compile=compiled)
    decoder = StaticDecoder(runner, model.config.vocab_size, options)
    runner.ring.begin_scratch()
    decoder.generate(first, 8)
    runner.ring.end_scratch()
    runner.ring.begin_scratch()
    runner.ring.arm_decode()
    graph = decoder._graph
    assert graph is not None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    print(f"{shape} compile={compiled}: {start.elapsed_time(end) / 50:.3f} ms per replayed step")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
    print(
        prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60)
    )
    runner.ring.finish_decode(0)
    runner.ring.end_scratch()


if __name__ == "__main__":
    main()
