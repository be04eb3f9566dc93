"""Run `streamd eval --breakdown`'s grid on the device over several texts; JSON + tables to
$OUT. Usage (GPU host, after device_env.sh and the GGUF joined):
    python3 tests/bench/sink_breakdown.py --out $OUT --tokens 16384 TEXT...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from streamd.daemon.engine.loading import load_model
from streamd.daemon.engine.prompts import build_framing
from streamd.daemon.tools.breakdown import BreakdownOptions, breakdown, render_breakdown


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
    parser.add_argument("--prompt", action="store_true", help="stream the daemon's prefix first")
    args = parser.parse_args()
    ints = lambda text: tuple(int(x) for x in text.split(","))  # noqa: E731
    options = BreakdownOptions(
        windows=ints(args.windows),
        sinks=ints(args.sinks),
        chunks=ints(args.chunks),
        placements=tuple(args.placements.split(",")),
        samples=args.samples,
    )
    loaded = load_model("default", "cuda" if torch.cuda.is_available() else "cpu", args.dtype)
    prefix = build_framing(loaded.tokenizer).prefix if args.prompt else ""
    prefix_ids = loaded.encode(prefix, allow_special=True) if prefix else []
    args.out.mkdir(parents=True, exist_ok=True)
    for text in args.texts:
        body = loaded.tokenizer(text.read_text(), add_special_tokens=False).input_ids
        ids = torch.tensor(prefix_ids + body[: args.tokens], device=loaded.device)
        began = time.time()
        report = breakdown(
            loaded.model,
            ids,
            len(prefix_ids),
            options,
            loaded.name,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        name = f"{text.stem}-{'prompt' if prefix else 'plain'}"
        (args.out / f"{name}.json").write_text(json.dumps(report.as_json()))
        table = render_breakdown(report)
        (args.out / f"{name}.txt").write_text(table + "\n")
        print(f"== {name} ({time.time() - began:.0f} s)\n{table}", flush=True)


if __name__ == "__main__":
    main()
