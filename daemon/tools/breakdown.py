"""`streamd eval --breakdown`: where the streamed cache loses to the recompute oracle.

For each max_capacity W, the oracle's sampled targets are scored once by recompute and by
every streamed variant (pinned prefix size, its placement, chunk); each variant's loss is
then split by where the target sits: its position in the stream, the predicting query's
offset in its chunk, and its distance from the last rebase. A bucket's ratio is
exp(mean NLL of the variant - mean NLL of the oracle) over the same targets in it.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from streamd.cache.hf import max_positions
from streamd.cache.layout import CacheLayout
from streamd.cache.ring import SinkMode

from .eval_text import EvalError
from .evaluate import (
    Progress,
    check_block,
    fitting_block,
    ratio,
    ratio_range,
    recompute_nll,
    sample_targets,
    stream_nll,
)

PLACEMENTS = {"before-window": SinkMode.REROTATE, "fixed": SinkMode.FIXED}
DEFAULT_WINDOWS = (256, 1024, 2048, 4096)
DEFAULT_SINKS = (4, 16)
DEFAULT_CHUNKS = (256, 16)
# Bucket edges: stream position (tokens), query offset in its chunk (fraction of the
# chunk), distance from the last rebase (tokens).
POSITION_EDGES = (1024, 2048, 4096, 8192)
OFFSET_FRACTIONS = (0.25, 0.5, 0.75)
REBASE_EDGES = (256, 1024, 4096)


@dataclass(frozen=True)
class BreakdownOptions:
    windows: tuple[int, ...] = DEFAULT_WINDOWS
    sinks: tuple[int, ...] = DEFAULT_SINKS  # pinned first tokens; the prompt's length if given
    chunks: tuple[int, ...] = DEFAULT_CHUNKS
    placements: tuple[str, ...] = ("before-window",)
    samples: int = 256  # blocks of `block` consecutive targets (evaluate.sample_targets)
    seed: int = 0
    rebase_threshold: int = 2**15
    recompute_batch: int = 8
    block: int = 16

    def __post_init__(self) -> None:
        unknown = [p for p in self.placements if p not in PLACEMENTS]
        if unknown:
            raise EvalError(f"unknown placements {unknown}: choose from {', '.join(PLACEMENTS)}")
        for name, values in (("windows", self.windows), ("chunks", self.chunks)):
            if not values or min(values) < 1:
                raise EvalError(f"{name} {values}: give one or more values >= 1")
        if not self.sinks or min(self.sinks) < 0:
            raise EvalError(f"sinks {self.sinks}: give one or more values >= 0")
        if self.rebase_threshold < 1 or self.samples < 1:
            raise EvalError(f"rebase threshold {self.rebase_threshold}, samples {self.samples}")
        check_block(self.block)


@dataclass
class Variant:
    """One streamed configuration scored on the oracle's targets of its window."""

    window: int  # max_capacity: pinned + window slots
    sinks: int
    chunk: int
    placement: str
    nll: list[float]  # per target, in target order
    chunk_offset: list[int]  # the predicting query's offset in its forward
    since_rebase: list[int]  # the predicting query's distance from the ring's base
    seconds: float

    @property
    def label(self) -> str:
        return f"P={self.sinks} C={self.chunk} {self.placement}"


@dataclass
class WindowResult:
    window: int
    targets: list[int]
    oracle_nll: list[float]
    variants: list[Variant] = field(default_factory=list)


@dataclass
class BreakdownReport:
    model: str
    tokens: int
    prefix_tokens: int  # a prompt streamed before the text (its tokens are never targets)
    trained_length: int
    block: int = 1
    windows: list[WindowResult] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokens": self.tokens,
            "prefix_tokens": self.prefix_tokens,
            "trained_length": self.trained_length,
            "block": self.block,
            "windows": [
                {
                    "window": w.window,
                    "oracle_ppl": _ppl(w.oracle_nll),
                    "targets": w.targets,
                    "oracle_nll": w.oracle_nll,
                    "variants": [
                        {
                            **vars(v),
                            "ppl": _ppl(v.nll),
                            "ratio": ratio(v.nll, w.oracle_nll),
                            "ratio_90": ratio_range(v.nll, w.oracle_nll, self.block),
                        }
                        for v in w.variants
                    ],
                }
                for w in self.windows
            ],
        }


def _ppl(nll: Sequence[float]) -> float:
    return math.exp(sum(nll) / len(nll)) if nll else math.nan


def breakdown(
    model: Any,
    ids: torch.Tensor,
    prefix_tokens: int,
    options: BreakdownOptions,
    model_name: str,
    progress: Progress = lambda _: None,
) -> BreakdownReport:
    """Score ids [N] (a prompt of `prefix_tokens` then the text) under every variant."""
    total = int(ids.shape[0])
    block = fitting_block(options.block, total - prefix_tokens)
    text_targets = sample_targets(total - prefix_tokens, options.samples, options.seed, block)
    targets = [prefix_tokens + j for j in text_targets]
    trained = max_positions(model.config)
    report = BreakdownReport(model_name, total, prefix_tokens, trained, block)
    with torch.inference_mode():
        for window in options.windows:
            progress(f"W={window}: recompute oracle, {len(targets) // block} fresh forwards")
            oracle = recompute_nll(model, ids, targets, window, options.recompute_batch, block)
            result = WindowResult(window, targets, oracle.tolist())
            for sinks in _sinks_for(options.sinks, prefix_tokens, window):
                for chunk in options.chunks:
                    for placement in options.placements:
                        variant = _score_variant(
                            model, ids, targets, window, sinks, chunk, placement, options
                        )
                        progress(
                            f"W={window} {variant.label}: ratio "
                            f"{ratio(variant.nll, result.oracle_nll):.4f}"
                        )
                        result.variants.append(variant)
            report.windows.append(result)
    return report


def _sinks_for(sinks: Sequence[int], prefix_tokens: int, window: int) -> list[int]:
    # With a prompt, its whole length is one more choice: what the daemon pins.
    choices = list(dict.fromkeys([*sinks, *([prefix_tokens] if prefix_tokens else [])]))
    return [p for p in choices if p < window]


def _score_variant(
    model: Any,
    ids: torch.Tensor,
    targets: list[int],
    window: int,
    sinks: int,
    chunk: int,
    placement: str,
    options: BreakdownOptions,
) -> Variant:
    began = time.perf_counter()
    layout = CacheLayout.build(pinned=sinks, window=window - sinks, chunk=chunk, scratch=0)
    forwards: list[tuple[int, int, int]] = []
    nll = stream_nll(
        model,
        ids,
        layout,
        PLACEMENTS[placement],
        lambda _: None,
        placement,
        rebase_threshold=options.rebase_threshold,
        on_forward=lambda start, end, base: forwards.append((start, end, base)),
    )
    starts = torch.tensor([start for start, _, _ in forwards])
    offsets, since = [], []
    for target in targets:
        query = target - 1  # the logits at position target-1 predict token `target`
        at = int(torch.searchsorted(starts, query, right=True)) - 1
        start, _, base = forwards[at]
        offsets.append(query - start)
        since.append(query - base)
    return Variant(
        window=window,
        sinks=sinks,
        chunk=chunk,
        placement=placement,
        nll=nll[torch.tensor(targets) - 1].tolist(),
        chunk_offset=offsets,
        since_rebase=since,
        seconds=time.perf_counter() - began,
    )


# ------------------------------------------------------------------ the table


def _bucket_label(index: int, edges: Sequence[int]) -> str:
    """The label of bucket `index` (bisect_right's) of `edges`: "0-1024", ">=8192"."""
    if index == len(edges):
        return f">={edges[-1]}"
    return f"{edges[index - 1] if index else 0}-{edges[index]}"


def bucket_ratios(
    variant: Variant, oracle: Sequence[float], values: Sequence[int], edges: Sequence[int]
) -> dict[str, tuple[float, int]]:
    """Per bucket of `values` (one per target) between `edges`, low to high: (ratio to the
    oracle, targets in it)."""
    groups: dict[int, list[int]] = {}
    for index, value in enumerate(values):
        groups.setdefault(bisect.bisect_right(edges, value), []).append(index)
    return {
        _bucket_label(bucket, edges): (
            ratio([variant.nll[i] for i in at], [oracle[i] for i in at]),
            len(at),
        )
        for bucket, at in sorted(groups.items())
    }


def variant_buckets(
    variant: Variant, result: WindowResult
) -> dict[str, dict[str, tuple[float, int]]]:
    """The three splits of one variant: by stream position, chunk offset, rebase distance."""
    chunk_edges = [max(1, int(variant.chunk * f)) for f in OFFSET_FRACTIONS]
    oracle = result.oracle_nll
    return {
        "position": bucket_ratios(variant, oracle, result.targets, POSITION_EDGES),
        "chunk offset": bucket_ratios(variant, oracle, variant.chunk_offset, chunk_edges),
        "since rebase": bucket_ratios(variant, oracle, variant.since_rebase, REBASE_EDGES),
    }


def render_breakdown(report: BreakdownReport) -> str:
    rows = [
        f"model {report.model} | {report.tokens} tokens ({report.prefix_tokens} of prompt) | "
        f"trained length {report.trained_length}",
    ]
    for result in report.windows:
        rows += ["", f"max_capacity {result.window}: oracle ppl {_ppl(result.oracle_nll):.3f}"]
        rows.append(f"  {'variant':<28} {'ppl':>8} {'ratio':>7} {'90% range':>15}")
        for variant in result.variants:
            low, high = ratio_range(variant.nll, result.oracle_nll, report.block)
            head = (
                f"  {variant.label:<28} {_ppl(variant.nll):>8.3f} "
                f"{ratio(variant.nll, result.oracle_nll):>7.4f} {low:>7.3f}-{high:.3f}"
            )
            rows.append(head)
            for split, buckets in variant_buckets(variant, result).items():
                cells = "  ".join(f"{k} {r:.3f}/{n}" for k, (r, n) in buckets.items())
                rows.append(f"      {split:<13} {cells}  (ratio/targets)")
    return "\n".join(rows)
