"""A grounded summary: what the model is told (the facts digest and the sentence
openers written from the facts) and what its words must pass before they are
published (one sentence each, no echo, no repeat, every claim supported)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamd.facts.claims import (
    Evidence,
    Policy,
    UnsupportedClaim,
    Verification,
    extract_claims,
)
from streamd.facts.records import Counted, LineFacts, SummaryFacts, TemplateCount
from streamd.facts.sentences import remove_echo

DIGEST_HEADER = "Facts counted by streamd over these lines (exact):"
LOG_QUESTION = (
    "\n\nFor an on-call engineer: what happened, what is new, what is failing? "
    "Say in a few words what each top event means."
)
TRANSCRIPT_QUESTION = (
    "\n\nWhat were the topics, decisions and action items? Answer in one or two sentences."
)
TOP_EVENTS = 3  # the events the summary names: the window's most frequent templates
DIGEST_TEMPLATES = 5  # the digest lists a few more, for context
NEW_EVENTS = 1  # new templates named beyond the top ones
TEMPLATE_CHARS = 160  # a quoted template is cut to this (with "...")
GLOSS_TOKENS = 24  # the model's words after an event opener: a short gloss or none
NARRATIVE_TOKENS = 48  # the model's closing sentence
RANKS = ("Most frequent", "Second", "Third", "Fourth", "Fifth")
GLOSS_OPENER = "This means that"  # the model says what the event before it means
NARRATIVE_OPENER = "Overall,"
MIN_WORDS = 3  # a completion of fewer words says nothing
SENTENCE_ENDS = (".", "!", "?", '."', ".'", ".)")
# The masks of a template (facts.entities, Drain's wildcard): in the model's own words they
# are an echo of the quoted template, not something a reader can use ("from IP on port <NUM>").
TEMPLATE_MASKS = re.compile(r"<(?:\*|IP|NUM|TIME|HOST|PATH|URL)>")


@dataclass(frozen=True)
class Segment:
    """Words written from the facts, then (if tokens > 0) the model's completion.

    `standalone`: the opener is a sentence by itself (it ends in "." if the
    completion is dropped); otherwise a dropped completion drops the segment.
    """

    opener: str
    tokens: int  # the model's budget for its completion; 0: the opener is all
    standalone: bool = True


@dataclass(frozen=True)
class SummaryPlan:
    digest: str  # the facts, bounded; goes after the stream, before the question
    question: str
    segments: tuple[Segment, ...]


def plan_summary(facts: SummaryFacts) -> SummaryPlan:
    """The digest, question and sentence openers for the window's profile."""
    window = facts.window
    if window.profile == "transcript":
        return SummaryPlan(
            transcript_digest(facts), TRANSCRIPT_QUESTION, transcript_segments(window)
        )
    return SummaryPlan(log_digest(facts), LOG_QUESTION, log_segments(facts))


# ------------------------------------------------------------------ digests


def _counted(label: str, values: Sequence[Counted]) -> str | None:
    items = [f"{v.value} ({v.count})" for v in values]
    return f"{label}: {', '.join(items)}." if items else None


def _span(facts: LineFacts) -> str:
    if facts.first_time and facts.last_time and facts.first_time != facts.last_time:
        return f" ({facts.first_time} to {facts.last_time})"
    return f" ({facts.first_time})" if facts.first_time else ""


def _lines_line(facts: SummaryFacts) -> str:
    return (
        f"Lines: {facts.window.lines} in view, {facts.since_last.lines} new since the last "
        f"summary{_span(facts.since_last)}."
    )


def _severity_text(severity: dict[str, int]) -> str:
    return ", ".join(f"{count} {word}" for word, count in severity.items() if count)


def short_template(template: str) -> str:
    if len(template) <= TEMPLATE_CHARS:
        return template
    # Cut between words: a quote that ends inside one is found nowhere (claims.py).
    cut = template[: TEMPLATE_CHARS - 3].rsplit(" ", 1)[0]
    if cut.count('"') % 2:  # nor one that leaves a quote mark open (it pairs with the next)
        cut = cut[: cut.rindex('"')]
    return cut.rstrip(" ,;:") + "..."


def quoted(template: str) -> str:
    """A template in quotes that pair: curly ones around a template holding straight
    ones (an access log's "GET /x HTTP/1.1")."""
    text = short_template(template)
    return f"“{text}”" if '"' in text else f'"{text}"'


def log_digest(facts: SummaryFacts) -> str:
    window = facts.window
    rows = [DIGEST_HEADER, _lines_line(facts), "Top events in view:"]
    for index, t in enumerate(window.templates[:DIGEST_TEMPLATES]):
        flag = " (new)" if t.new else ""
        rows.append(f"{index + 1}. {t.count} lines: {short_template(t.template)}{flag}")
    severity = _severity_text(window.severity)
    if severity:
        rows.append(f"Severity (lines): {severity}.")
    for kind, values in window.entities.items():
        row = _counted(kind.capitalize() + "s", values)
        if row:
            rows.append(row)
    return "\n".join(rows)


def transcript_digest(facts: SummaryFacts) -> str:
    window = facts.window
    rows = [DIGEST_HEADER, _lines_line(facts)]
    for label, values in (("Speakers", window.speakers), ("Key terms", window.terms)):
        row = _counted(label, values)
        if row:
            rows.append(row)
    if window.numbers:
        rows.append(f"Numbers said: {', '.join(window.numbers)}.")
    if window.dates:
        rows.append(f"Dates and times said: {', '.join(window.dates)}.")
    return "\n".join(rows)


# ----------------------------------------------------------------- openers


def lead_sentence(facts: SummaryFacts) -> str:
    """The first sentence, all facts: how much is new, when, how bad."""
    since = facts.since_last
    lead = f"{lines_text(since.lines, 'new ')}{_span(since)}"
    severity = _severity_text(since.severity)
    return f"{lead}: {severity}." if severity else f"{lead}."


def lines_text(count: int, kind: str = "") -> str:
    """ "1 new line", "3 new lines"."""
    return f"{count} {kind}line" + ("" if count == 1 else "s")


def event_sentence(rank: int, t: TemplateCount, in_view: int) -> str:
    return f"{RANKS[rank]} ({t.count} of {lines_text(in_view)} in view): {quoted(t.template)}."


def _glossed(sentence: str) -> list[Segment]:
    """A facts sentence, then the model's gloss of it (published only if it passes)."""
    return [Segment(sentence, 0), Segment(GLOSS_OPENER, GLOSS_TOKENS, False)]


def log_segments(facts: SummaryFacts) -> tuple[Segment, ...]:
    window = facts.window
    segments = [Segment(lead_sentence(facts), 0)]
    for rank, t in enumerate(window.templates[:TOP_EVENTS]):
        segments += _glossed(event_sentence(rank, t, window.lines))
    fresh = [t for t in window.templates[TOP_EVENTS:] if t.new][:NEW_EVENTS]
    for t in fresh:
        sentence = f"New since the last summary: {quoted(t.template)} ({lines_text(t.count)})."
        segments += _glossed(sentence)
    segments.append(Segment(NARRATIVE_OPENER, NARRATIVE_TOKENS, False))
    return tuple(segments)


def transcript_segments(window: LineFacts) -> tuple[Segment, ...]:
    names = [s.value for s in window.speakers[:3]]
    if names:
        who = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        opener = f"In these {window.lines} lines, {who} talked about"
    else:
        opener = f"These {window.lines} lines are about"
    return (
        Segment(opener, NARRATIVE_TOKENS, standalone=False),
        Segment(NARRATIVE_OPENER, NARRATIVE_TOKENS, standalone=False),
    )


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class Written:
    """One segment as the session ran it: the model's words after the opener (its
    first sentence, or what it wrote before its budget ran out)."""

    segment: Segment
    completion: str


@dataclass(frozen=True)
class Grounded:
    text: str  # what is published
    verification: Verification


def _sentence(segment: Segment, completion: str) -> str:
    if not completion:
        return segment.opener if segment.opener.endswith(".") else segment.opener + "."
    return f"{segment.opener} {completion.strip()}"


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def _flaw(completion: str, earlier: set[str], echo_sources: Sequence[str]) -> str | None:
    """Why a completion cannot be published as it stands, or None."""
    words = completion.strip()
    if sum(any(c.isalpha() for c in w) for w in words.split()) < MIN_WORDS:
        return "empty"
    if not words[0].isalnum():  # "This means that , for example": a broken start
        return "broken"
    if not words.endswith(SENTENCE_ENDS):
        return "incomplete"
    if remove_echo(words, echo_sources)[1]:
        return "echo"
    if TEMPLATE_MASKS.search(words):
        return "placeholder"
    if _normalized(words) in earlier:
        return "repeat"
    return None


def finish_summary(
    written: Sequence[Written],
    evidence: Evidence,
    policy: Policy,
    echo_sources: Sequence[str],
) -> Grounded:
    """Publish the openers and the completions that pass: a complete sentence, no echo
    of the instructions, no repeat of an earlier one, and (drop-sentence) no claim
    that the window text or the facts do not support."""
    sentences: list[str] = []
    removed: list[str] = []
    unsupported: list[UnsupportedClaim] = []
    earlier: set[str] = set()
    checked = supported = 0
    for item in written:
        segment, completion = item.segment, item.completion.strip()
        candidate = _sentence(segment, completion)
        # Each part on its own: a quote mark of one must not pair with one of the other.
        claims = extract_claims(segment.opener) + extract_claims(completion)
        bad = [c for c in claims if not evidence.supports(c)]
        checked, supported = checked + len(claims), supported + len(claims) - len(bad)
        flaw = _flaw(completion, earlier, echo_sources) if segment.tokens else None
        if bad:
            unsupported += [UnsupportedClaim(c.kind, c.text, candidate) for c in bad]
            if policy == "drop-sentence":
                flaw = flaw or "unsupported"
        if flaw is None:
            sentences.append(candidate)
            earlier.add(_normalized(completion))
            continue
        if segment.tokens and completion:
            removed.append(candidate)
        if segment.standalone:
            sentences.append(_sentence(segment, ""))
    text = " ".join(sentences)
    after = extract_claims(text)
    verification = Verification(
        policy=policy,
        checked=checked,
        supported=supported,
        unsupported=tuple(unsupported),
        removed_sentences=tuple(removed),
        checked_after=len(after),
        supported_after=sum(evidence.supports(c) for c in after),
    )
    return Grounded(text, verification)


def top_patterns_text(facts: dict[str, Any] | None, most: int = 5) -> str:
    """The window's most frequent templates with their exact counts, to print under a
    summary (facts as in a summary record: SummaryFacts.as_dict())."""
    window = (facts or {}).get("window") or {}
    templates = window.get("templates") or []
    if not templates:
        return ""
    rows = [f"  top patterns in view ({window.get('lines')} lines):"]
    for t in templates[:most]:
        new = "  (new)" if t.get("new") else ""
        rows.append(f"  {t.get('count'):>6}  {t.get('template')}{new}")
    return "\n".join(rows) + "\n"
