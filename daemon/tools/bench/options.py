"""What `streamd bench` measures: prompt and generation lengths, cache shapes, repeats."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Progress = Callable[[str], None]

# --scaling when not given: a CPU stops at 100k (its 1M row would take hours).
GPU_SCALING = "10000,100000,1000000"
CPU_SCALING = "10000,100000"
# --stream-capacity when not given: the experiment's 2048 on a GPU; on a CPU the daemon's
# own default max_capacity, what `streamd run` there streams through.
GPU_STREAM_CAPACITY = 2048
CPU_STREAM_CAPACITY = 1024


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
    refresh: str = "auto"  # the window's refresh, as the daemon's cache.refresh
