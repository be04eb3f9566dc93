"""sinks/recompute with and without refreshing the window, over texts, max_capacities, chunks
and seeds: one oracle run per (text, max_capacity, seed), every refresh setting streamed
against it (the targets of `streamd eval`: 256 samples of 16, contexts centred). JSON lines
and a table to --out. Usage (GPU host, after device_env.sh and the GGUF joined; or a CPU):
    python3 tests/bench/refresh_ratios.py --out $OUT --caps 256,512 --refresh off,auto TEXT...
A text given as PATH:N uses its first N tokens (default --tokens).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import torch

from streamd.cache.layout import CacheLayout, refresh_every
from streamd.cache.ring import SinkMode
from streamd.daemon.engine.loading import load_model
from streamd.daemon.tools.eval_text import read_text_tokens
from streamd.daemon.tools.evaluate import (
    ratio,
    ratio_range,
    recompute_nll,
    sample_targets,
    stream_nll,
)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("texts", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--caps", default="256,512,1024,2048")
    parser.add_argument("--chunks", default="64,256")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--refresh", default="off,auto")
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_model("default", device, args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.texts:
        path, _, count = spec.partition(":")
        tokens = int(count) if count else args.tokens
        ids = torch.tensor(read_text_tokens(loaded.tokenizer, Path(path), tokens), device=device)
        for cap, seed in itertools.product(_ints(args.caps), _ints(args.seeds)):
            targets = sample_targets(tokens, args.samples, seed, args.block)
            with torch.inference_mode():
                oracle = recompute_nll(loaded.model, ids, targets, cap, 8, args.block).tolist()
            for chunk, setting in itertools.product(_ints(args.chunks), args.refresh.split(",")):
                layout = CacheLayout.build(
                    pinned=args.sinks, window=cap - args.sinks, chunk=chunk, scratch=0
                )
                began = time.perf_counter()
                nll = stream_nll(
                    loaded.model,
                    ids,
                    layout,
                    SinkMode.REROTATE,
                    lambda _: None,
                    "sinks",
                    refresh=setting,
                )
                seconds = time.perf_counter() - began
                sampled = nll[torch.tensor(targets) - 1].tolist()
                low, high = ratio_range(sampled, oracle, args.block)
                row = {
                    "text": Path(path).stem, "tokens": tokens, "max_capacity": cap,
                    "chunk": chunk, "seed": seed, "refresh": setting,
                    "refresh_every": refresh_every(setting, layout, device == "cuda"),
                    "sinks_over_recompute": round(ratio(sampled, oracle), 4),
                    "range90": [round(low, 4), round(high, 4)], "stream_seconds": round(seconds, 2),
                }  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    (args.out / "refresh_ratios.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (args.out / "refresh_ratios.txt").write_text(render(rows, loaded.name, device, args.dtype))


def render(rows: list[dict], model: str, device: str, dtype: str) -> str:
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    lines = [
        f"{model} on {name}, {dtype}; sinks/recompute (90% range), 256 samples of 16",
        "",
        f"{'text':<22} {'cap':>5} {'chunk':>5} {'seed':>4} {'refresh':>8} {'ratio':>7}  range",
    ]
    for r in rows:
        every = r["refresh_every"] or "off"
        low, high = r["range90"]
        lines.append(
            f"{r['text']:<22} {r['max_capacity']:>5} {r['chunk']:>5} {r['seed']:>4} "
            f"{every!s:>8} {r['sinks_over_recompute']:>7.4f}  {low:.3f}-{high:.3f}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
