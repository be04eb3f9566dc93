"""How good one summary is, by the measures `streamd eval-summaries` reports.

claim precision: supported / checkable claims of the published text;
top-3 recall: of the window's 3 most frequent templates, how many the text
mentions (facts.mentions); complete: the text ends on a whole sentence;
repeat: the text equals the one before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from streamd.facts.claims import Evidence, extract_claims
from streamd.facts.mentions import template_mentioned
from streamd.facts.records import SummaryFacts
from streamd.facts.sentences import complete_sentences

TOP_K = 3


@dataclass(frozen=True)
class SummaryScore:
    checked: int  # checkable claims in the published text
    supported: int
    top_templates: int  # how many of the window's top-3 templates there were
    mentioned: int  # how many of those the text mentions
    complete: bool
    repeat: bool
    latency_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_summary(
    text: str,
    facts: SummaryFacts,
    window_text: str,
    previous: str | None,
    latency_s: float,
) -> SummaryScore:
    evidence = Evidence(window_text, facts)
    claims = extract_claims(text)
    top = [t.template for t in facts.window.templates[:TOP_K]]
    whole, cut = complete_sentences(text)
    return SummaryScore(
        checked=len(claims),
        supported=sum(evidence.supports(c) for c in claims),
        top_templates=len(top),
        mentioned=sum(template_mentioned(t, text) for t in top),
        complete=bool(whole.strip()) and not cut,
        repeat=previous is not None and text.strip() == previous.strip(),
        latency_s=latency_s,
    )


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass(frozen=True)
class Totals:
    summaries: int
    claim_precision: float | None
    claims_checked: int
    top3_recall: float | None
    complete_ratio: float | None
    repeated: int
    latency_median_s: float | None
    latency_max_s: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def totals(scores: Sequence[SummaryScore]) -> Totals:
    latencies = sorted(s.latency_s for s in scores)
    checked = sum(s.checked for s in scores)
    return Totals(
        summaries=len(scores),
        claim_precision=_ratio(sum(s.supported for s in scores), checked),
        claims_checked=checked,
        top3_recall=_ratio(sum(s.mentioned for s in scores), sum(s.top_templates for s in scores)),
        complete_ratio=_ratio(sum(s.complete for s in scores), len(scores)),
        repeated=sum(s.repeat for s in scores),
        latency_median_s=round(latencies[len(latencies) // 2], 4) if latencies else None,
        latency_max_s=round(latencies[-1], 4) if latencies else None,
    )
