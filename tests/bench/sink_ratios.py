"""sinks / recompute at several max_capacity values, per text, with samples of 16 targets and
of 1 (the spread of each), as `streamd eval --policy sinks --policy recompute` computes it.
Usage (GPU host, after device_env.sh and the GGUF joined):
    python3 tests/bench/sink_ratios.py --out $OUT --windows 256,1024,2048 TEXT[:TOKENS]...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from streamd.daemon.engine.loading import load_model
from streamd.daemon.tools.evaluate import EvalOptions, evaluate, read_text_tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("texts", nargs="+", help="FILE or FILE:TOKENS (default 16384)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--windows", default="256,1024,2048")
    parser.add_argument("--blocks", default="16,1")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    loaded = load_model(device=args.device, dtype=args.dtype)
    rows = []
    for spec in args.texts:
        path, _, count = spec.partition(":")
        ids = torch.tensor(
            read_text_tokens(loaded.tokenizer, Path(path), int(count or 16384)),
            device=loaded.device,
        )
        for window in (int(w) for w in args.windows.split(",")):
            for block in (int(b) for b in args.blocks.split(",")):
                for seed in (int(s) for s in args.seeds.split(",")):
                    options = EvalOptions(
                        tokens=int(ids.shape[0]),
                        max_capacity=window,
                        sinks=args.sinks,
                        samples=args.samples,
                        seed=seed,
                        block=block,
                        policies=("sinks", "recompute"),
                    )
                    began = time.perf_counter()
                    report = evaluate(loaded.model, ids, options, loaded.name)
                    value = report.sinks_ratio()
                    assert value is not None
                    row = {
                        "text": Path(path).name,
                        "tokens": int(ids.shape[0]),
                        "window": window,
                        "sinks": args.sinks,
                        "block": block,
                        "samples": report.samples,
                        "seed": seed,
                        "ratio": value[0],
                        "range90": value[1:],
                        "seconds": time.perf_counter() - began,
                    }
                    rows.append(row)
                    print(
                        f"{row['text']:<24} W={window:<5} P={args.sinks} block {block:<3} "
                        f"seed {seed} "
                        f"ratio {value[0]:.4f} ({value[1]:.3f}-{value[2]:.3f}) "
                        f"{row['seconds']:.0f}s",
                        flush=True,
                    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sink_ratios.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
