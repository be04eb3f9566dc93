"""`streamd eval-summaries FILE`: stream a text file through one session in batches
of lines, summarize after each batch, and score every summary (summary_scores.py);
with `compare`, the plain path (no facts, no checks) runs on the same batches."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamd.facts.records import SummaryFacts

from ..engine.api import Summary
from ..engine.session import Session
from .summary_scores import SummaryScore, Totals, score_summary, totals

Echo = Callable[[str], None]


class EvalSummariesError(ValueError):
    """The input cannot be evaluated; the message says why and what to do."""


@dataclass(frozen=True)
class EvalSummariesOptions:
    every_lines: int = 40
    compare: bool = False
    max_batches: int | None = None


@dataclass
class Run:
    """The summaries of one path (grounded, or plain with compare) and their scores."""

    records: list[dict[str, Any]] = field(default_factory=list)
    scores: list[SummaryScore] = field(default_factory=list)

    def add(self, summary: Summary, facts: SummaryFacts) -> SummaryScore:
        previous = self.records[-1]["text"] if self.records else None
        score = score_summary(summary.text, facts, summary.window_text, previous, summary.latency_s)
        self.scores.append(score)
        self.records.append(
            {
                "text": summary.text,
                "window_text": summary.window_text,
                "facts": facts.as_dict(),
                "verification": summary.verification.as_dict() if summary.verification else None,
                "latency_s": round(summary.latency_s, 4),
                "ttft_s": round(summary.ttft_s, 4),
                "generated_tokens": summary.generated_tokens,
                "scores": score.as_dict(),
            }
        )
        return score

    def totals(self) -> Totals:
        return totals(self.scores)


def read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        raise EvalSummariesError(f"{path}: {error.strerror or error}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise EvalSummariesError(f"{path}: no text lines to stream")
    return lines


def batches(lines: Sequence[str], every: int, most: int | None) -> Iterator[list[str]]:
    for index, start in enumerate(range(0, len(lines), every)):
        if most is not None and index >= most:
            return
        yield list(lines[start : start + every])


def evaluate_summaries(
    session: Session, lines: Sequence[str], options: EvalSummariesOptions, echo: Echo
) -> tuple[Run, Run | None]:
    """Every batch is ingested once; after it, a grounded summary (and a plain one)."""
    grounded, plain = Run(), (Run() if options.compare else None)
    planned = -(-len(lines) // options.every_lines)
    if options.max_batches is not None:
        planned = min(planned, options.max_batches)
    for number, batch in enumerate(batches(lines, options.every_lines, options.max_batches), 1):
        session.ingest("\n".join(batch))
        summary = session.summarize()
        facts = summary.facts
        if facts is None:
            raise EvalSummariesError("the grounded summary came without facts")
        score = grounded.add(summary, facts)
        line = f"[{number}/{planned}] {len(batch)} lines: {progress(score)}"
        if plain is not None:
            line += f" | plain: {progress(plain.add(session.summarize(grounded=False), facts))}"
        echo(line)
    return grounded, plain


def progress(score: SummaryScore) -> str:
    return (
        f"claims {score.supported}/{score.checked}, top-3 {score.mentioned}/"
        f"{score.top_templates}, {'complete' if score.complete else 'cut'}, "
        f"{score.latency_s:.1f} s"
    )


# ------------------------------------------------------------------ output


def _cell(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render_table(grounded: Run, plain: Run | None) -> str:
    rows = [f"{'#':>3} {'claims':>8} {'top-3':>6} {'complete':>8} {'repeat':>6} {'latency':>8}"]
    for index, s in enumerate(grounded.scores, 1):
        rows.append(
            f"{index:>3} {f'{s.supported}/{s.checked}':>8} "
            f"{f'{s.mentioned}/{s.top_templates}':>6} {'yes' if s.complete else 'no':>8} "
            f"{'yes' if s.repeat else 'no':>6} {s.latency_s:>7.2f}s"
        )
    runs = [("grounded", grounded.totals())]
    if plain is not None:
        runs.append(("plain", plain.totals()))
    rows += ["", f"{'':<22}" + "".join(f"{name:>12}" for name, _ in runs)]
    measures: list[tuple[str, Callable[[Totals], str]]] = [
        ("claim precision", lambda t: _cell(t.claim_precision)),
        ("claims checked", lambda t: str(t.claims_checked)),
        ("top-3 pattern recall", lambda t: _cell(t.top3_recall)),
        ("complete sentences", lambda t: _cell(t.complete_ratio)),
        ("repeated summaries", lambda t: str(t.repeated)),
        ("latency median (s)", lambda t: _cell(t.latency_median_s)),
        ("latency max (s)", lambda t: _cell(t.latency_max_s)),
    ]
    for label, cell in measures:
        rows.append(f"{label:<22}" + "".join(f"{cell(t):>12}" for _, t in runs))
    return "\n".join(rows)


def report(grounded: Run, plain: Run | None, meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        **meta,
        "summaries": grounded.records,
        "totals": grounded.totals().as_dict(),
    }
    if plain is not None:
        out["compare"] = {"summaries": plain.records, "totals": plain.totals().as_dict()}
    return out
