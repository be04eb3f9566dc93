"""Where the bench rows' streamd memory goes (a benchmark tool, not a test).

python tests/bench/memory_rows.py smollm2-135m [--compile]
Runs the rows' HF baseline and streamd as `streamd bench` does, then lists the
live CUDA allocations at streamd's peak, largest first, with where they were made.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import torch

from streamd.daemon.tools.bench.baseline import baseline_generate
from streamd.daemon.tools.bench.device import peak_mb
from streamd.daemon.tools.bench.models import random_model
from streamd.daemon.tools.bench.options import BenchOptions
from streamd.daemon.tools.bench.streamd_side import streamd_generate


def _mb(n: float) -> str:
    return f"{n / 2**20:8.1f} MB"


def _where(frames: list[dict]) -> str:
    keep = [
        f"{f['filename'].split('/')[-1]}:{f['line']} {f['name']}"
        for f in frames
        if any(k in f["filename"] for k in ("streamd", "cache/", "daemon/", "transformers/"))
    ]
    return " < ".join(keep[:4]) or (frames[0]["name"] if frames else "?")


def main() -> None:
    shape = next((a for a in sys.argv[1:] if not a.startswith("--")), "smollm2-135m")
    options = BenchOptions(compile="--compile" in sys.argv)
    device = torch.device("cuda")
    model = random_model(shape, device, torch.bfloat16)
    prompt = torch.randint(0, model.config.vocab_size, (options.prompt_tokens,), device=device)
    print(f"weights + setup: {_mb(torch.cuda.memory_allocated())}")
    memory: dict[str, float] = {}
    with peak_mb(device, memory):
        baseline_generate(model, prompt.unsqueeze(0), options.new_tokens, options.repeats)
    print(f"baseline peak {memory['peak']:.1f} MB; after: {_mb(torch.cuda.memory_allocated())}")
    torch.cuda.memory._record_memory_history(max_entries=200_000)
    rows = streamd_generate(model, prompt, options, graph=True)
    print(
        f"streamd peak {rows.peak_mb:.1f} MB, graph pools {rows.graph_pool_mb:.1f} MB, "
        f"TPOT {rows.tpot_s * 1000:.3f} ms"
    )
    print(f"allocated now {_mb(torch.cuda.memory_allocated())}")
    print(f"reserved now {_mb(torch.cuda.memory_reserved())}")
    snapshot = torch.cuda.memory._snapshot()
    groups: dict[str, list[int]] = defaultdict(list)
    for segment in snapshot["segments"]:
        for block in segment["blocks"]:
            if block["state"] == "active_allocated":
                where = _where(block.get("frames", []))
                key = f"stream {segment['stream']:#x} pool {segment['segment_pool_id']} {where}"
                groups[key].append(block["size"])
    for key, sizes in sorted(groups.items(), key=lambda kv: -sum(kv[1]))[:25]:
        print(f"{_mb(sum(sizes))} x{len(sizes):4d}  {key}")


if __name__ == "__main__":
    main()
