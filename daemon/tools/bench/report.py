"""The bench's numbers (BenchReport, also its JSON) and the table they print as."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchReport:
    device: str
    model: str
    dtype: str
    weights_bytes: int
    copy_bandwidth_gb_s: float
    decode_floor_ms: float
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    summary_ttft_s: float = 0.0
    decode_equal: bool | None = None
    # Memory the rows' CUDA graphs reserve for their intermediates. A replay does not go
    # through the allocator, so the Memory row (peak allocated, as in the experiment)
    # does not see it; the baseline's intermediates are in its peak.
    streamd_graph_pool_mb: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(vars(self))


def change(baseline: float | None, ours: float | None) -> str:
    if baseline is None or ours is None or baseline == 0 or math.isnan(baseline):
        return "-"
    return f"{(ours / baseline - 1) * 100:+.1f}%"


def render(report: BenchReport) -> str:
    def fmt(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:,.{digits}f}"

    lines = [
        f"device {report.device} | model {report.model} ({report.dtype}) | weights "
        f"{report.weights_bytes / 1e9:.3f} GB | copy bandwidth {report.copy_bandwidth_gb_s:,.0f} "
        f"GB/s | decode floor {report.decode_floor_ms:.3f} ms",
        "",
        f"{'':<18}{'baseline':>12}{'streamd':>12}{'change':>10}",
    ]
    labels = {
        "ppl": ("PPL (lower better)", 2),
        "memory_mb": ("Memory (MB)", 0),
        "throughput_tok_s": ("Throughput (t/s)", 1),
        "ttft_s": ("TTFT (s)", 4),
        "tpot_ms": ("TPOT (ms)", 3),
    }
    for key, (label, digits) in labels.items():
        row = report.rows[key]
        lines.append(
            f"{label:<18}{fmt(row['baseline'], digits):>12}{fmt(row['streamd'], digits):>12}"
            f"{change(row['baseline'], row['streamd']):>10}"
        )
    lines += [
        "",
        f"{'stream tokens':<14}{'baseline tok/s':>16}{'MB':>10}{'streamd tok/s':>16}{'MB':>10}",
    ]
    for entry in report.scaling:
        base: dict[str, Any] | None = entry["baseline"]
        if base is None:
            b_rate, b_mem = "not run", ""
        elif "failed" in base:
            b_rate, b_mem = base["failed"], ""
        else:
            mark = " *" if base.get("beyond_context") else ""
            b_rate, b_mem = f"{base['ingest_tok_s']:,.0f}{mark}", f"{base['memory_mb']:,.0f}"
        ours: dict[str, Any] = entry["streamd"]
        lines.append(
            f"{entry['tokens']:<14,}{b_rate:>16}{b_mem:>10}{ours['ingest_tok_s']:>16,.0f}"
            f"{ours['memory_mb']:>10,.0f}"
        )
    lines += [
        "  * beyond the model's trained context",
        "",
        f"summary TTFT (instruction prefill + first token): {report.summary_ttft_s * 1000:.2f} ms",
        f"fast decode == plain decode (greedy tokens): {report.decode_equal}",
    ]
    if report.device != "cpu":
        lines.append(
            f"streamd's CUDA graphs reserve {report.streamd_graph_pool_mb:,.0f} MB beyond the "
            "Memory row's peak allocated (their intermediates: a replay bypasses the allocator)"
        )
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
