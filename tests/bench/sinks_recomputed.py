"""Where the streamed cache's gap to the recompute oracle comes from: its sinks, or its keys
and values. A third policy, the oracle with the stream's sinks in front (one fresh forward
over the first `sinks` tokens and the block's window, positions contiguous), sits between:
  stream / sinks-recomputed: what computing the window's K/V while streaming costs (each
      token's K/V saw context that has since been evicted);
  sinks-recomputed / oracle: what the pinned first tokens cost against the window's own.
Same targets as `streamd eval` (blocks of 16, contexts centred on max_capacity). Usage:
    python tests/bench/sinks_recomputed.py TEXT --max-capacity 256 --seed 1 [--device cpu]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from streamd.daemon.engine.loading import load_model
from streamd.daemon.tools.eval_text import read_text_tokens
from streamd.daemon.tools.evaluate import (
    EvalOptions,
    evaluate,
    ratio,
    ratio_range,
    recompute_nll,
    sample_targets,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("text", type=Path)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--max-capacity", type=int, default=256)
    parser.add_argument("--sinks", type=int, default=4)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    loaded = load_model(device=args.device, dtype=args.dtype)
    ids = torch.tensor(
        read_text_tokens(loaded.tokenizer, args.text, args.tokens), device=loaded.device
    )
    options = EvalOptions(
        tokens=args.tokens,
        max_capacity=args.max_capacity,
        sinks=args.sinks,
        samples=args.samples,
        seed=args.seed,
        block=args.block,
        policies=("sinks", "recompute"),
    )
    report = evaluate(loaded.model, ids, options, loaded.name, print)
    stream = report.policies["sinks"].sampled_nll
    oracle = report.policies["recompute"].sampled_nll
    targets = sample_targets(args.tokens, args.samples, args.seed, args.block)
    middle = recompute_nll(
        loaded.model,
        ids,
        targets,
        args.max_capacity,
        options.recompute_batch,
        args.block,
        sinks=args.sinks,
    ).tolist()
    for name, a, b in (
        ("stream / oracle", stream, oracle),
        ("sinks-recomputed / oracle", middle, oracle),
        ("stream / sinks-recomputed", stream, middle),
    ):
        low, high = ratio_range(a, b, args.block)
        print(f"{name:<28} {ratio(a, b):.4f}  (90% range {low:.3f}-{high:.3f})")


if __name__ == "__main__":
    main()
