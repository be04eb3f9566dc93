"""Run `streamd eval --breakdown`'s grid on the device over several texts; JSON + tables to
$OUT. Usage (GPU host, after device_env.sh and the GGUF joined):
    python3 tests/bench/sink_breakdown.py --out $OUT --tokens 16384 TEXT...
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from streamd.daemon.engine.loading import load_model
from streamd.daemon.tools.breakdown import BreakdownOptions, breakdown, render_breakdown
from streamd.daemon.tools.breakdown_cli import IntList, stream_ids
from streamd.daemon.tools.eval_text import read_text_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--windows", default="256,1024,2048,4096")
    parser.add_argument("--sinks", default="4,16")
    parser.add_argument("--chunks", default="256,16")
    parser.add_argument("--placements", default="before-window")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--prompt", action="store_true", help="stream the daemon's prefix first")
    args = parser.parse_args()
    options = BreakdownOptions(
        windows=IntList(2).convert(args.windows, None, None),
        sinks=IntList(0).convert(args.sinks, None, None),
        chunks=IntList(1).convert(args.chunks, None, None),
        placements=tuple(args.placements.split(",")),
        samples=args.samples,
        block=args.block,
    )
    loaded = load_model("default", "cuda" if torch.cuda.is_available() else "cpu", args.dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    for text, seed in itertools.product(args.texts, [int(s) for s in args.seeds.split(",")]):
        text_ids = read_text_tokens(loaded.tokenizer, text, args.tokens)
        ids, prefix_tokens = stream_ids(loaded, text_ids, with_prompt=args.prompt)
        began = time.time()
        report = breakdown(
            loaded.model,
            ids,
            prefix_tokens,
            dataclasses.replace(options, seed=seed),
            loaded.name,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        name = f"{text.stem}-{'prompt' if args.prompt else 'plain'}-seed{seed}"
        (args.out / f"{name}.json").write_text(json.dumps(report.as_json()))
        table = render_breakdown(report)
        (args.out / f"{name}.txt").write_text(table + "\n")
        print(f"== {name} ({time.time() - began:.0f} s)\n{table}", flush=True)


if __name__ == "__main__":
    main()
