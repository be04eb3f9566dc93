"""Exact facts of the lines since the last summary (a period) and of the model's window.

Memory stays bounded however many distinct lines arrive: at most max_clusters templates,
MAX_SPAN_TEMPLATES tallies and MAX_ENTITY_VALUES values per kind in a span; lines past a
cap still count (in "<other templates>"), so template counts always sum to the lines."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from .entities import ScannedLine, scan_line
from .miner import TemplateMiner, TemplateRef
from .profile import detect_profile
from .records import (
    ENTITY_KINDS,
    PROFILES,
    SEVERITIES,
    Counted,
    LineFacts,
    SummaryFacts,
    TemplateCount,
)
from .transcript import transcript_facts

OTHER_TEMPLATES = "<other templates>"
MAX_SPAN_TEMPLATES = 10_000  # template tallies per span (at least 2 * max_clusters)
MAX_ENTITY_VALUES = 10_000  # distinct values counted per entity kind and span
# Unless the profile is "logs", a period keeps its last lines: its profile is decided on
# them at period_facts(), and a transcript's facts are made from them.
PROFILE_LINES = 2_000

ProfileSetting = Literal["auto", "logs", "transcript"]


class _Tally:
    """One template within a span: its lines, first line, first-seen order, and new."""

    __slots__ = ("count", "example", "new", "order", "ref", "text")

    def __init__(self, ref: TemplateRef | None, text: str, example: str, new: bool, order: int):
        self.count = 1
        self.ref = ref  # the cluster's template as it is now, even once evicted
        self.text = text  # without a cluster: the line's masked text is its template
        self.example = example
        self.new = new
        self.order = order

    def template(self) -> str:
        return self.text if self.ref is None else str(self.ref.get_template())


class _Span:
    """Counts of one span of lines: templates, severities, entities, first and last time."""

    def __init__(self, max_tallies: int) -> None:
        self.lines = 0
        self.max_tallies = max_tallies
        self.tallies: dict[int | str, _Tally] = {}
        self.overflow = 0  # lines of templates first seen once the tallies were full
        self.overflow_example: str | None = None
        self.severity = dict.fromkeys(SEVERITIES, 0)
        self.entities: dict[str, dict[str, int]] = {kind: {} for kind in ENTITY_KINDS}
        self.entity_overflow = dict.fromkeys(ENTITY_KINDS, 0)
        self.first_time: str | None = None
        self.last_time: str | None = None

    def add_template(self, key: int | str, line: str, ref: TemplateRef | None, new: bool) -> None:
        """Count a line whose template (a cluster id, or a masked text) has no tally yet."""
        if len(self.tallies) < self.max_tallies:
            text = key if isinstance(key, str) else ""
            self.tallies[key] = _Tally(ref, text, line, new, len(self.tallies))
        else:
            self.overflow += 1
            if self.overflow_example is None:
                self.overflow_example = line

    def count_lines(self, scans: Sequence[ScannedLine]) -> None:
        """Count the severities, entities and times of lines (whose templates are tallied)."""
        self.lines += len(scans)
        severity_counts, entity_counts = self.severity, self.entities
        for scan in scans:
            for severity in scan.severities:
                severity_counts[severity] += 1
            for kind, value in scan.entities:
                counter = entity_counts[kind]
                seen = counter.get(value)
                if seen is not None:
                    counter[value] = seen + 1
                elif len(counter) < MAX_ENTITY_VALUES:
                    counter[value] = 1
                else:  # the counted values stay exact; a value first seen now goes uncounted
                    self.entity_overflow[kind] += 1
            if scan.timestamp is not None:
                if self.first_time is None:
                    self.first_time = scan.timestamp
                self.last_time = scan.timestamp

    def facts(self, max_templates: int, top_entities: int) -> LineFacts:
        return LineFacts(
            profile="logs",
            lines=self.lines,
            templates=self._templates(max_templates),
            severity=dict(self.severity),
            entities=self._top_entities(top_entities),
            first_time=self.first_time,
            last_time=self.last_time,
        )

    def _templates(self, max_templates: int) -> tuple[TemplateCount, ...]:
        # Two clusters may show one text (one evicted, then made again): one template.
        merged: dict[str, _Tally] = {}
        for tally in self.tallies.values():
            text = tally.template()
            same = merged.get(text)
            if same is None:
                merged[text] = same = _Tally(None, text, tally.example, tally.new, tally.order)
                same.count = tally.count
            else:
                same.count += tally.count
                same.new = same.new and tally.new
        ranked = sorted(merged.values(), key=lambda t: -t.count)  # stable: first seen first
        shown = [TemplateCount(t.text, t.count, t.example, t.new) for t in ranked[:max_templates]]
        rest = ranked[max_templates:]
        rest_count = sum(t.count for t in rest) + self.overflow
        if rest_count:
            first = min(rest, key=lambda t: t.order).example if rest else self.overflow_example
            shown.append(TemplateCount(OTHER_TEMPLATES, rest_count, first or "", False))
        return tuple(shown)

    def _top_entities(self, top: int) -> dict[str, tuple[Counted, ...]]:
        tops = {}
        for kind, counter in self.entities.items():
            if counter:  # nlargest keeps the first seen of equal counts first
                best = heapq.nlargest(top, counter.items(), key=lambda item: item[1])
                tops[kind] = tuple(Counted(value, count) for value, count in best)
        return tops


class FactsTracker:
    """Mines lines as they arrive; answers with the facts of the period or of a window.

    A template is new when its cluster was made since the last close_period(). First and
    last times are those of the first and last lines with one, in stream order. With
    profile "auto" the period's last PROFILE_LINES lines decide, at period_facts().
    """

    def __init__(
        self,
        max_clusters: int = 1000,
        top_entities: int = 5,
        max_templates: int = 50,
        profile: ProfileSetting = "auto",
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        self.miner = TemplateMiner(max_clusters=max_clusters)
        self.top_entities = top_entities
        self.max_templates = max_templates
        self.profile: ProfileSetting = profile
        self._max_tallies = max(MAX_SPAN_TEMPLATES, 2 * max_clusters)
        self._period = _Span(self._max_tallies)
        self._period_start = self.miner.created  # a cluster with a higher id is new
        self._recent: deque[str] = deque(maxlen=PROFILE_LINES)

    def observe(self, lines: Sequence[str]) -> None:
        """Count lines just ingested into the current period, learning their templates."""
        if self.profile != "logs":
            self._recent.extend(lines)
        if self.profile == "transcript":
            self._period.lines += len(lines)
            return
        period, observe, miner = self._period, self.miner.observe, self.miner
        tallies, start = period.tallies, self._period_start
        scans = list(map(scan_line, lines))
        for line, scan in zip(lines, scans, strict=True):
            cluster_id = observe(scan.masked)
            tally = tallies.get(cluster_id)
            if tally is not None:
                tally.count += 1
            else:
                period.add_template(cluster_id, line, miner.ref(cluster_id), cluster_id > start)
        period.count_lines(scans)

    def period_facts(self) -> LineFacts:
        """Facts of the lines observed since the last close_period()."""
        if self._is_transcript(self._recent):
            return replace(transcript_facts(list(self._recent)), lines=self._period.lines)
        return self._period.facts(self.max_templates, self.top_entities)

    def close_period(self) -> None:
        """Start a new period (after a summary): counts restart, templates made later are new."""
        self._period = _Span(self._max_tallies)
        self._period_start = self.miner.created
        self._recent.clear()

    def window_facts(self, lines: Sequence[str]) -> LineFacts:
        """Facts of the model's window, given as its lines; the templates learn nothing."""
        if self._is_transcript(lines):
            return transcript_facts(lines)
        span, miner, start = _Span(self._max_tallies), self.miner, self._period_start
        scans = list(map(scan_line, lines))
        for line, scan in zip(lines, scans, strict=True):
            masked = scan.masked
            cluster_id = miner.match(masked)
            key: int | str = masked if cluster_id is None else cluster_id  # no template: its own
            tally = span.tallies.get(key)
            if tally is not None:
                tally.count += 1
            elif cluster_id is None:  # not new: it may be a template evicted long ago
                span.add_template(masked, line, None, False)
            else:
                span.add_template(cluster_id, line, miner.ref(cluster_id), cluster_id > start)
        span.count_lines(scans)
        return span.facts(self.max_templates, self.top_entities)

    def summary_facts(self, window_lines: Sequence[str]) -> SummaryFacts:
        """The period's facts and the window's, with the template totals."""
        return SummaryFacts(
            since_last=self.period_facts(),
            window=self.window_facts(window_lines),
            templates_total=self.miner.alive,
            templates_evicted=self.miner.evicted,
        )

    def _is_transcript(self, lines: Sequence[str]) -> bool:
        if self.profile != "auto":
            return self.profile == "transcript"
        return detect_profile(lines) == "transcript"
