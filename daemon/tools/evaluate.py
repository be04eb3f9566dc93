"""`streamd eval`: perplexity of one text under several cache policies, same tokens, one run.

The policies (dense, window, sinks, sinks-fixed, and the recompute oracle) are described at
`POLICIES`. All compare on the same positions.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from streamd.cache.hf import RingModel, build_ring_cache, max_positions
from streamd.cache.layout import CacheLayout, LayoutError, parse_refresh, refresh_every
from streamd.cache.ring import SinkMode

from .eval_text import EvalError

# The policies; all drive the same model forward through the ring cache, except the oracle:
# - dense: every earlier token visible; only up to the model's trained length;
# - window: the last max_capacity tokens, no sinks (evict oldest);
# - sinks: streamd: `sinks` pinned first tokens re-placed before the window, the window
#   refreshed as `refresh` says (the daemon's cache.refresh; cache/layout.py);
# - sinks-fixed: the same sinks left at their original positions (distances grow);
# - recompute: the StreamingLLM oracle: each sample, a block of `block` consecutive targets,
#   predicted by one fresh forward (positions from 0) whose contexts are centred on
#   max_capacity: the k-th of 16 sees max_capacity - 8 + k tokens, a mean of max_capacity
#   - 0.5 (loss changes smoothly with context, so the block averages to the oracle at
#   max_capacity; starting every block at max_capacity would give the oracle 7.5 tokens
#   more than the stream on average). Block 1: one target, exactly the textbook oracle.
# Every streaming policy scores every token, and also the oracle's sampled targets, so all
# compare on the same positions. Blocks: the ratio of two policies is a mean of paired
# per-target differences, and one forward scoring 16 targets instead of 1 cuts its spread
# about 3x for the same number of fresh forwards (blocks of neighbours are correlated).
POLICIES = ("dense", "window", "sinks", "sinks-fixed", "recompute")
Progress = Callable[[str], None]


@dataclass(frozen=True)
class EvalOptions:
    tokens: int = 4096
    max_capacity: int = 256
    sinks: int = 4
    chunk: int = 64
    samples: int = 256
    seed: int = 0
    recompute_batch: int = 8
    policies: tuple[str, ...] = POLICIES
    block: int = 16  # consecutive targets per sample (one fresh forward of the oracle)
    refresh: str = "auto"  # the sinks policy's, as the daemon's cache.refresh

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise EvalError(f"unknown policies {unknown}: choose from {', '.join(POLICIES)}")
        if self.sinks < 0 or self.sinks >= self.max_capacity:
            raise EvalError(f"sinks = {self.sinks}: must be >= 0 and below max_capacity")
        if self.max_capacity < 2 or self.chunk < 1 or self.samples < 1 or self.tokens < 2:
            raise EvalError(
                f"max_capacity {self.max_capacity} (>= 2), chunk {self.chunk} (>= 1), "
                f"samples {self.samples} (>= 1), tokens {self.tokens} (>= 2): out of range"
            )
        check_block(self.block)
        try:
            parse_refresh(self.refresh)
        except LayoutError as error:
            raise EvalError(str(error)) from None


@dataclass
class PolicyResult:
    ppl: float | None  # over every scored token; None where the policy cannot run them all
    ppl_sampled: float | None  # over the oracle's sampled targets it scored
    scored_tokens: int
    samples_scored: int  # sampled targets it scored
    seconds: float
    note: str = ""
    sampled_nll: list[float] = field(default_factory=list)  # per sampled target, in order

    def as_json(self) -> dict[str, Any]:
        return {name: value for name, value in vars(self).items() if name != "sampled_nll"}


@dataclass
class EvalReport:
    model: str
    tokens: int
    max_capacity: int
    sinks: int
    samples: int  # blocks of `block` consecutive targets
    chunk: int
    trained_length: int
    block: int = 1
    refresh_every: int = 0  # the sinks policy's (0: never)
    policies: dict[str, PolicyResult] = field(default_factory=dict)

    def sinks_ratio(self) -> tuple[float, float, float] | None:
        """sinks over recompute on the sampled targets, with its 90% range; None unless both
        ran."""
        sinks, oracle = self.policies.get("sinks"), self.policies.get("recompute")
        if sinks is None or oracle is None or not sinks.sampled_nll or not oracle.sampled_nll:
            return None
        low, high = ratio_range(sinks.sampled_nll, oracle.sampled_nll, self.block)
        return ratio(sinks.sampled_nll, oracle.sampled_nll), low, high

    def as_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokens": self.tokens,
            "max_capacity": self.max_capacity,
            "sinks": self.sinks,
            "samples": self.samples,
            "block": self.block,
            "refresh_every": self.refresh_every,
            "targets": self.samples * self.block,
            "chunk": self.chunk,
            "trained_length": self.trained_length,
            "policies": {name: result.as_json() for name, result in self.policies.items()},
            "sinks_over_recompute": self.sinks_ratio(),
        }


def check_block(block: int) -> None:
    if block < 1:
        raise EvalError(f"block {block}: give 1 or more targets per sample (--block)")


def fitting_block(block: int, tokens: int) -> int:
    """The block, shortened to the targets there are (tokens 1..tokens-1) in a short text."""
    return max(1, min(block, tokens - 1))


def sample_targets(tokens: int, samples: int, seed: int, block: int = 1) -> list[int]:
    """Target positions j (token j predicted from tokens < j), fixed by the seed: `samples`
    blocks of `block` consecutive targets, on a grid (1, 1 + block, ...) so none overlap."""
    population = range(1, tokens - block + 1, block)
    starts = random.Random(seed).sample(population, min(samples, len(population)))
    return [start + k for start in sorted(starts) for k in range(block)]


def ratio(nll: Sequence[float], oracle: Sequence[float]) -> float:
    """exp(mean(nll) - mean(oracle)): a policy's PPL over the oracle's on the same targets."""
    if not nll:
        return math.nan
    return math.exp((sum(nll) - sum(oracle)) / len(nll))


def ratio_range(
    nll: Sequence[float], oracle: Sequence[float], block: int = 1
) -> tuple[float, float]:
    """The ratio's 90% range from the spread of the paired differences, per sample (a block's
    mean: neighbours are not independent): how far another draw of as many samples could
    move it (the normal approximation)."""
    diffs = [a - b for a, b in zip(nll, oracle, strict=True)]
    blocks = (diffs[at : at + block] for at in range(0, len(diffs), block))
    means = [sum(one) / len(one) for one in blocks]
    if len(means) < 2:
        return math.nan, math.nan
    mean = sum(means) / len(means)
    spread = math.sqrt(sum((d - mean) ** 2 for d in means) / (len(means) - 1) / len(means))
    return math.exp(mean - 1.645 * spread), math.exp(mean + 1.645 * spread)


def perplexity(nll: torch.Tensor) -> float:
    return float(math.exp(nll.double().mean().item()))


def _targets_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits [n, vocab] predicting targets [n] -> nll [n] (fp32)."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def stream_nll(
    model: Any,
    ids: torch.Tensor,
    layout: CacheLayout,
    sink_mode: SinkMode,
    progress: Progress,
    label: str,
    rebase_threshold: int = 2**15,
    on_forward: Callable[[int, int, int], None] | None = None,
    refresh: str = "off",
) -> torch.Tensor:
    """NLL of every target 1..N-1 when `ids` [N] streams through a ring cache of `layout`,
    its window refreshed as `refresh` says (cache/layout.py: refresh_every).
    on_forward(start, end, base) is told of each forward: its tokens and the ring's base."""
    ring = build_ring_cache(
        model,
        layout,
        sink_mode=sink_mode,
        check_positions=False,
        rebase_threshold=rebase_threshold,
    )
    runner = RingModel(model, ring, refresh=refresh)
    total = ids.shape[0]
    nll = torch.empty(total - 1, dtype=torch.float32)
    pieces: list[tuple[int, int]] = []
    if layout.pinned:
        pieces.append((0, layout.pinned))
    pieces += [(s, min(s + layout.chunk, total)) for s in range(layout.pinned, total, layout.chunk)]
    report_every = max(1, len(pieces) // 8)
    for index, (start, end) in enumerate(pieces):
        step = runner.prefix if start == 0 and layout.pinned else runner.stream
        logits = step(ids[start:end].unsqueeze(0), logits_to_keep=0)[0]
        if on_forward is not None:
            on_forward(start, end, ring.base)
        last = min(end, total - 1)
        if last > start:
            nll[start:last] = _targets_nll(logits[: last - start], ids[start + 1 : last + 1]).cpu()
        if index % report_every == 0:
            progress(f"{label}: {end}/{total} tokens")
    return nll


@torch.inference_mode()
def recompute_nll(
    model: Any,
    ids: torch.Tensor,
    targets: Sequence[int],
    context: int,
    batch: int,
    block: int = 1,
    sinks: int = 0,
) -> torch.Tensor:
    """The oracle: each block of `block` targets from j (sample_targets' order) by one fresh
    forward over ids[max(0, j-lead) : j+block-1], lead = context - block // 2: target j+k
    sees min(j, lead) + k tokens (contexts centred on `context`). With sinks > 0 (below
    lead), a window that no longer reaches the text's start gives its first `sinks` tokens
    to ids[:sinks], as a stream pins them (positions contiguous; the same row lengths).
    -> nll [len(targets)], in the targets' order."""
    out = torch.empty(len(targets), dtype=torch.float32)
    lead = max(1, context - block // 2)
    starts = list(range(0, len(targets), block))  # index of each block's first target
    order = sorted(starts, key=lambda at: min(targets[at], lead))
    for first in range(0, len(order), batch):
        group = order[first : first + batch]
        lengths = {min(targets[at], lead) for at in group}
        for length in sorted(lengths):  # equal lengths batch without padding
            same = [at for at in group if min(targets[at], lead) == length]
            rows = torch.stack([_oracle_row(ids, targets[at], length, block, sinks) for at in same])
            logits = model(input_ids=rows, use_cache=False, logits_to_keep=block).logits
            want = torch.stack([ids[targets[at] : targets[at] + block] for at in same])
            nll = _targets_nll(logits.reshape(-1, logits.shape[-1]), want.reshape(-1)).cpu()
            for row, at in enumerate(same):
                out[at : at + block] = nll[row * block : (row + 1) * block]
    return out


def _oracle_row(ids: torch.Tensor, first: int, length: int, block: int, sinks: int) -> torch.Tensor:
    """ids [N] -> the row [length + block - 1] whose last `block` positions predict the block
    from `first`: the `length` tokens before it (ids[:sinks] for their first `sinks` where
    the window does not reach the start), then the block but its last token."""
    if sinks and first > length:
        return torch.cat([ids[:sinks], ids[first - length + sinks : first + block - 1]])
    return ids[first - length : first + block - 1]


def _layouts(options: EvalOptions, tokens: int, trained: int) -> dict[str, CacheLayout]:
    window = options.max_capacity
    sinks_window = options.max_capacity - options.sinks
    return {
        "dense": CacheLayout.build(
            pinned=0, window=min(tokens, trained), chunk=options.chunk, scratch=0
        ),
        "window": CacheLayout.build(pinned=0, window=window, chunk=options.chunk, scratch=0),
        "sinks": CacheLayout.build(
            pinned=options.sinks, window=sinks_window, chunk=options.chunk, scratch=0
        ),
        "sinks-fixed": CacheLayout.build(
            pinned=options.sinks, window=sinks_window, chunk=options.chunk, scratch=0
        ),
    }


def _score_stream_policy(
    name: str,
    model: Any,
    ids: torch.Tensor,
    layout: CacheLayout,
    targets: list[int],
    trained: int,
    progress: Progress,
    refresh: str,
) -> PolicyResult:
    began = time.perf_counter()
    mode = SinkMode.FIXED if name == "sinks-fixed" else SinkMode.REROTATE
    run_ids = ids[:trained] if name == "dense" else ids
    nll = stream_nll(model, run_ids, layout, mode, progress, name, refresh=refresh)
    inside = [j for j in targets if j < run_ids.shape[0]]
    sampled = nll[torch.tensor(inside, dtype=torch.long) - 1] if inside else None
    complete = run_ids.shape[0] == ids.shape[0]
    return PolicyResult(
        ppl=perplexity(nll) if complete else None,
        ppl_sampled=perplexity(sampled) if sampled is not None else None,
        scored_tokens=int(nll.shape[0]),
        samples_scored=len(inside),
        seconds=time.perf_counter() - began,
        note="" if complete else f"first {trained} tokens only (the trained length)",
        sampled_nll=[] if sampled is None else sampled.tolist(),
    )


def evaluate(
    model: Any,
    ids: torch.Tensor,
    options: EvalOptions,
    model_name: str,
    progress: Progress = lambda _: None,
) -> EvalReport:
    """Score `ids` [N] (on the model's device) under each policy of `options`."""
    trained = max_positions(model.config)
    total = int(ids.shape[0])
    block = fitting_block(options.block, total)
    targets = sample_targets(total, options.samples, options.seed, block)
    report = EvalReport(
        model=model_name,
        tokens=total,
        max_capacity=options.max_capacity,
        sinks=options.sinks,
        samples=len(targets) // block,
        chunk=options.chunk,
        trained_length=trained,
        block=block,
    )
    layouts = _layouts(options, total, trained)
    gpu = ids.device.type == "cuda"
    report.refresh_every = refresh_every(options.refresh, layouts["sinks"], gpu)
    with torch.inference_mode():
        for name in options.policies:
            if name == "recompute":
                began = time.perf_counter()
                progress(f"recompute: {report.samples} fresh forwards")
                nll = recompute_nll(
                    model,
                    ids,
                    targets,
                    options.max_capacity,
                    options.recompute_batch,
                    block,
                )
                report.policies[name] = PolicyResult(
                    ppl=None,
                    ppl_sampled=perplexity(nll),
                    scored_tokens=0,
                    samples_scored=len(targets),
                    seconds=time.perf_counter() - began,
                    note="oracle: sampled targets only",
                    sampled_nll=nll.tolist(),
                )
            else:
                refresh = options.refresh if name == "sinks" else "off"
                report.policies[name] = _score_stream_policy(
                    name, model, ids, layouts[name], targets, trained, progress, refresh
                )
    return report


def render_table(report: EvalReport) -> str:
    head = (
        f"model {report.model} | {report.tokens} tokens | max_capacity {report.max_capacity} | "
        f"sinks {report.sinks} | refresh {report.refresh_every or 'off'} | chunk {report.chunk} | "
        f"{report.samples} samples of "
        f"{report.block} targets | trained length {report.trained_length}"
    )
    rows = [
        head,
        "",
        f"{'policy':<12} {'ppl':>10} {'ppl_sampled':>12} {'targets':>8} {'seconds':>8}  note",
    ]
    for name, r in report.policies.items():
        ppl = f"{r.ppl:.2f}" if r.ppl is not None else "-"
        sampled = f"{r.ppl_sampled:.2f}" if r.ppl_sampled is not None else "-"
        rows.append(
            f"{name:<12} {ppl:>10} {sampled:>12} {r.samples_scored:>8} {r.seconds:>8.1f}  {r.note}"
        )
    sinks_ratio = report.sinks_ratio()
    if sinks_ratio is not None:
        value, low, high = sinks_ratio
        rows.append(
            f"\nsinks / recompute on the sampled targets: {value:.4f} "
            f"(90% range {low:.3f}-{high:.3f})"
        )
    return "\n".join(rows)
