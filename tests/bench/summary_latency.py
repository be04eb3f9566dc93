"""Summary latency, plain question vs grounded (facts digest + guided sentences), in one
session of the default model on one device. Not a test: a benchmark to run by hand.

    python tests/bench/summary_latency.py --device cuda --runs 20

Each round streams 40 new lines of the bundled fail2ban logs, then writes a plain and a
grounded summary (the stream cache is bit-identical after each, so both read the same
window). Prints the median TTFT (request prefill + first token on the host) and the
median whole-summary latency of each, and the grounded summaries' token counts.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from streamd.daemon.engine.session import Session, SessionConfig
from streamd.daemon.tools.demo import sample_lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--max-capacity", type=int, default=1024)
    args = parser.parse_args()
    session = Session(
        SessionConfig(model=args.model, device=args.device, max_capacity=args.max_capacity)
    )
    lines = sample_lines()
    rows: dict[str, list[tuple[float, float, int]]] = {"plain": [], "grounded": []}
    for run in range(args.runs + 1):
        start = (run * 40) % len(lines)
        session.ingest("\n".join((lines + lines)[start : start + 40]))
        for name in rows:
            summary = session.summarize(grounded=name == "grounded")
            if run:  # the first round warms up (captures the grounded request's graph)
                rows[name].append((summary.ttft_s, summary.latency_s, summary.generated_tokens))
    device = torch.cuda.get_device_name() if session.loaded.device.type == "cuda" else "cpu"
    report = {"device": device, "model": session.model_name, "runs": args.runs}
    for name, values in rows.items():
        report[name] = {
            "ttft_ms_median": round(1000 * statistics.median(v[0] for v in values), 3),
            "latency_ms_median": round(1000 * statistics.median(v[1] for v in values), 3),
            "generated_tokens_median": statistics.median(v[2] for v in values),
        }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
