"""The bench's numbers (BenchReport, also its JSON) and the table they print as."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .llama_cpp import LlamaBench, StreamdRates, render_llama


@dataclass
class BenchReport:
    device: str
    model: str
    dtype: str  # what streamd computes in, e.g. "bfloat16, int4 decode"
    weights_bytes: int  # streamd's model
    copy_bandwidth_gb_s: float
    decode_floor_ms: float  # streamd's model's weights read once at the copy bandwidth
    decode_weights: str = "model"  # the decode step's: "model", or "int4" copies
    baseline_dtype: str = ""  # the HF dense baseline's: float32 on a CPU
    baseline_weights_bytes: int = 0
    threads: int = 0  # torch's threads for the CPU's matmuls
    memory_unit: str = "GPU memory MB"  # the Memory row's; on a CPU "peak RSS MB"
    scaling_memory_unit: str = "GPU MB"  # the scaling table's; on a CPU "RSS MB"
    rows: dict[str, dict[str, float | None]] = field(default_factory=dict)
    scaling: list[dict[str, Any]] = field(default_factory=list)
    summary_ttft_s: float = 0.0
    decode_equal: bool | None = None
    # The rows' prompt through streamd's ring, tokens/s (CPU only: see Generated.prompt_s).
    streamd_prompt_tok_s: float | None = None
    max_capacity: int = 0  # the rows' ring
    stream_capacity: int = 0  # the scaling table's ring
    chunk: int = 0  # its prefill chunk
    # Memory the rows' CUDA graphs reserve for their intermediates. A replay does not go
    # through the allocator, so the Memory row (peak allocated, as in the experiment)
    # does not see it; the baseline's intermediates are in its peak.
    streamd_graph_pool_mb: float = 0.0
    llama_cpp: LlamaBench | None = None  # with --llama-bench
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["llama_cpp"] = None if self.llama_cpp is None else self.llama_cpp.as_json()
        return out


def change(baseline: float | None, ours: float | None) -> str:
    if baseline is None or ours is None or baseline == 0 or math.isnan(baseline):
        return "-"
    return f"{(ours / baseline - 1) * 100:+.1f}%"


def render(report: BenchReport) -> str:
    lines = [*_header(report), "", *_rows(report), "", *_scaling(report), *_footer(report)]
    if report.llama_cpp is not None:
        lines += render_llama(report.llama_cpp, streamd_rates(report))
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _header(report: BenchReport) -> list[str]:
    weights = f"weights {report.weights_bytes / 1e9:.3f} GB"
    if report.baseline_weights_bytes:
        weights += f" (the baseline's copy {report.baseline_weights_bytes / 1e9:.3f} GB)"
    floor = f"decode floor {report.decode_floor_ms:.3f} ms"
    if report.decode_weights != "model":
        floor += f" (of the model's weights; the decode step reads {report.decode_weights} copies)"
    cpu = f" | threads {report.threads}" if report.device == "cpu" else ""
    return [
        f"device {report.device}{cpu} | model {report.model} | baseline "
        f"{report.baseline_dtype or report.dtype}, streamd {report.dtype}",
        f"{weights} | copy bandwidth {report.copy_bandwidth_gb_s:,.0f} GB/s | {floor}",
    ]


def _fmt(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def _rows(report: BenchReport) -> list[str]:
    lines = [f"{'':<18}{'baseline':>12}{'streamd':>12}{'change':>10}"]
    labels = {
        "ppl": ("PPL (lower better)", 2),
        "memory_mb": (report.memory_unit, 0),
        "throughput_tok_s": ("Throughput (t/s)", 1),
        "ttft_s": ("TTFT (s)", 4),
        "tpot_ms": ("TPOT (ms)", 3),
    }
    for key, (label, digits) in labels.items():
        row = report.rows[key]
        lines.append(
            f"{label:<18}{_fmt(row['baseline'], digits):>12}{_fmt(row['streamd'], digits):>12}"
            f"{change(row['baseline'], row['streamd']):>10}"
        )
    return lines


def _scaling(report: BenchReport) -> list[str]:
    unit = report.scaling_memory_unit
    lines = [
        f"scaling: streamd at max_capacity {report.stream_capacity:,}, chunks of "
        f"{report.chunk:,} tokens",
        f"{'stream tokens':<14}{'baseline tok/s':>16}{unit:>10}{'streamd tok/s':>16}{unit:>10}",
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
    return [*lines, "  * beyond the model's trained context"]


def _footer(report: BenchReport) -> list[str]:
    lines = [
        "",
        f"summary TTFT (instruction prefill + first token): {report.summary_ttft_s * 1000:.2f} ms",
        f"fast decode == plain decode (greedy tokens): {report.decode_equal}",
    ]
    if report.device == "cpu":
        lines.append(
            "RSS: the whole process's resident memory (/proc/self/status), weights, Python and "
            "torch included: the rows' peak within each side's measurement, the scaling "
            "table's at each checkpoint"
            + ("; both sides' models stay loaded" if report.baseline_weights_bytes else "")
        )
    else:
        lines.append(
            f"streamd's CUDA graphs reserve {report.streamd_graph_pool_mb:,.0f} MB beyond the "
            "Memory row's peak allocated (their intermediates: a replay bypasses the allocator)"
        )
    return lines


def streamd_rates(report: BenchReport) -> StreamdRates:
    """streamd's numbers for the llama.cpp lines: the rows', and the first checkpoint's."""
    first: dict[str, Any] = report.scaling[0] if report.scaling else {}
    return StreamdRates(
        prompt_tok_s=report.streamd_prompt_tok_s,
        stream_tokens=int(first.get("tokens", 0)),
        stream_tok_s=float(first.get("streamd", {}).get("ingest_tok_s", 0.0)),
        tpot_ms=report.rows["tpot_ms"]["streamd"] or 0.0,
        max_capacity=report.max_capacity,
    )
