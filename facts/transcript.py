"""Transcript facts: who spoke, the salient terms, and the numbers and dates said."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .records import Counted, LineFacts


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Too common in English (speech and old plays included) to be salient; lower case.
COMMON_WORDS = _words(
    """
    a about above across after again against ago all almost along already also although
    always am among an and another any anyone anything anyway are around as ask asked at
    away back be became because been before being below best better between big bit both
    but by call called came can can't cannot come comes coming could couldn't did didn't
    do does doesn't doing don't done down during each either else end enough even ever
    every everyone everything few find first for found from gave get gets getting give
    given go goes going gone gonna good got gotta great had hadn't has hasn't have haven't
    having he he's hear her here hers herself him himself his how however i i'd i'll i'm
    i've if in into is isn't it it's its itself just keep kind knew know known last least
    left less let let's like likely little long look looked lot lots made make makes many
    may maybe me mean might mine more most much must my myself need needs never new next
    no none nor not nothing now of off often oh ok okay old on once one ones only onto or
    other others our ours out over own part per perhaps put quite rather really right
    said same saw say saying says see seem seems seen she she's should shouldn't since so
    some someone something sometimes soon sort still stuff such sure take taken tell than
    thank thanks that that's the their theirs them themselves then there there's these
    they they'd they'll they're they've thing things think this those though thought
    through thus time times to today together too took toward try two uh um under until
    up upon us use used using very via want wanted wants was wasn't way ways we we'd we'll
    we're we've well went were weren't what what's whatever when where whether which while
    who who's whole whom whose why will with within without won't would wouldn't yeah yep
    yes yet you you'd you'll you're you've your yours yourself
    thee thou thy thine hath doth dost hast art ay nay ere tis twas twill ye yea o shall
    sir hmm mhm alright actually basically exactly probably pretty
    """
)
# Month and weekday names are dates (facts.dates), not terms.
DATE_WORDS = _words(
    """
    january february march april may june july august september october november december
    monday tuesday wednesday thursday friday saturday sunday tonight tomorrow yesterday
    to-night to-day to-morrow
    """
)
# Words that open a "Label:" line without naming a speaker (notes, tags, sound cues).
LABEL_WORDS = _words(
    """
    note notes summary agenda action actions item items todo to-do fixme warning error
    info debug update status subject re fwd cc bcc date time location attendees present
    decision decisions next steps ps nb edit source example step answer question topic
    music laughter laughs applause inaudible crosstalk silence noise pause cough
    unintelligible foreign aside within beneath exit exeunt enter sings reads
    """
)
# Common words that plays and transcripts do use as speakers ("All: Amen").
_CROWDS = frozenset(["all", "both", "another", "others", "some others", "everyone"])
_NOT_SPEAKER_SUFFIXES = ("Error", "Exception", "Warning")

_NAME_WORD = r"[A-ZÀ-ÖØ-Þ][\w'’.-]*"
_NAME_LINK = r"&|and|of|de|van|von|da|la|le"  # "Duke of York", "Mr. & Mrs. Smith"
_NAME = rf"{_NAME_WORD}(?:[ \t]+(?:{_NAME_WORD}|{_NAME_LINK})){{0,5}}(?:[ \t]+\d{{1,2}})?"
# "[00:01:23] Alice: ..." and "10:30 Bob: ..." carry a clock before the label.
_CLOCK_PREFIX = r"(?:[\[(]?\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d{1,3})?[\])]?\s+)?"
_SPEAKER = re.compile(
    rf"^\s*{_CLOCK_PREFIX}(?:"
    r"\*\*(?P<bold>[^*:]{1,40}?)(?::\*\*|\*\*:|\*\*(?=\s*$))"  # **HAMLET**, **Alice:**
    rf"|\[(?P<bracket>{_NAME})\]:?"  # [Alice]
    rf"|(?P<plain>{_NAME}):(?!\S)"  # Alice: (not 10:30, http://, key:value)
    r")\s*(?P<rest>.*)$"
)
# A line that is all stage direction or sound cue: _Exit_, *Exeunt*, (Aside), [Music].
_DIRECTION = re.compile(r"^\s*(?:_[^_].*_|\*[^*].*\*|\(.*\)|\[.*\])\s*$")
# "(Aside) A little more than kin": the direction is not part of what is said.
_LEAD_DIRECTION = re.compile(r"^\s*(?:\([^)]*\)|\[[^\]]*\])\s*")


def split_speaker(line: str) -> tuple[str | None, str]:
    """(speaker, speech) for a line that opens with a speaker label, else (None, line)."""
    m = _SPEAKER.match(line)
    if m is None:
        return None, line
    bold, bracket, plain = m.group("bold", "bracket", "plain")
    name = (bold or bracket or plain).strip()
    # Inline "Word:" is the riskiest form: there a common word ("So:") is no name,
    # unless written in capitals as plays write names ("ALL:", "BOTH:").
    if not _is_speaker_name(name, strict=plain is not None and not name.isupper()):
        return None, line
    return name, m.group("rest").strip()


def _is_speaker_name(name: str, *, strict: bool) -> bool:
    if not name or not name[0].isalpha() or name.endswith(_NOT_SPEAKER_SUFFIXES):
        return False
    words = [w.strip(".").lower() for w in name.split() if w.strip(".&")]
    if " ".join(words) in _CROWDS:
        return True
    stop = LABEL_WORDS | COMMON_WORDS if strict else LABEL_WORDS
    return not all(w in stop or w.isdigit() for w in words)


@dataclass
class _Turns:
    """Lines spoken per speaker, and the speech text (labels and stage directions removed)."""

    counts: Counter[str] = field(default_factory=Counter)
    speech: list[str] = field(default_factory=list)
    current: str | None = None  # the speaker of a "**NAME**" or "NAME:" header line
    silent: bool = False  # that header has had no speech line yet

    def close(self) -> None:
        # A header with no speech after it (yet) still counts as one turn.
        if self.current is not None and self.silent:
            self.counts[self.current] += 1
        self.current, self.silent = None, False

    def feed(self, line: str) -> None:
        speaker, speech = split_speaker(line)
        stripped = line.strip()
        if speaker is not None:
            self.close()
            if speech:
                self.counts[speaker] += 1
            else:
                self.current, self.silent = speaker, True
        elif not stripped:
            return  # a speech goes on after a stage direction's paragraph
        elif stripped.startswith("#"):
            self.close()  # a new act or scene
            return
        elif _DIRECTION.match(stripped):
            return
        elif self.current is not None:
            self.counts[self.current] += 1
            self.silent = False
        said = _LEAD_DIRECTION.sub("", speech)
        if said:
            self.speech.append(said)


def _turns(lines: Sequence[str]) -> _Turns:
    turns = _Turns()
    for line in lines:
        turns.feed(line)
    turns.close()
    return turns


# --- Terms ------------------------------------------------------------------

_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*[^\W\d_])?")
# Clitics of common words: do't, is't, we'd, 'em; "appear'd" keeps its stem.
_CLITIC = re.compile(r"['’](?:s|t|d|ll|re|ve|m|em|st)$")
_SENTENCE_END = frozenset('.!?:;"“(')


@dataclass(frozen=True)
class _Word:
    key: str  # lower case
    form: str  # as written, less a possessive 's
    proper: bool  # capitalised mid-sentence (a name, place, product) or an acronym
    start: int
    end: int


@dataclass
class _Tally:
    count: int = 0
    proper: int = 0
    first: int = 0  # order of first appearance, to break ties
    forms: Counter[str] = field(default_factory=Counter)

    def add(self, form: str, proper: bool, order: int) -> None:
        if not self.count:
            self.first = order
        self.count += 1
        self.proper += proper
        self.forms[form] += 1

    def shown(self, key: str) -> str:
        return self.forms.most_common(1)[0][0] if self.is_proper else key

    @property
    def is_proper(self) -> bool:
        return self.proper * 2 >= self.count

    def score(self, phrase: bool) -> float:
        # Phrases are rarer than words, so a repeated one says more; names say more.
        return self.count * (2.0 if phrase else 1.0) * (1.5 if self.is_proper else 1.0)


def _is_content(key: str, form: str, skip: frozenset[str]) -> bool:
    if len(key) < 3 and not (len(form) == 2 and form.isupper()):
        return False
    stem = _CLITIC.sub("", key)
    return not any(w in COMMON_WORDS or w in DATE_WORDS or w in skip for w in (key, stem))


def _opens_sentence(text: str, start: int) -> bool:
    j = start - 1
    while j >= 0 and text[j].isspace():
        j -= 1
    return j < 0 or text[j] in _SENTENCE_END


def _content_words(text: str, skip: frozenset[str]) -> Iterator[_Word]:
    for m in _WORD.finditer(text):
        form = re.sub(r"['’]s$", "", m.group())
        key = form.lower()
        if not _is_content(key, form, skip):
            continue
        capital = form[0].isupper()
        acronym = len(form) > 1 and form.isupper()
        proper = capital and (acronym or not _opens_sentence(text, m.start()))
        yield _Word(key, form, proper, m.start(), m.end())


def _tally_terms(
    speech: Sequence[str], skip: frozenset[str]
) -> tuple[dict[str, _Tally], dict[str, _Tally]]:
    words: dict[str, _Tally] = {}
    phrases: dict[str, _Tally] = {}
    order = 0
    for text in speech:
        prev: _Word | None = None
        for w in _content_words(text, skip):
            order += 1
            words.setdefault(w.key, _Tally()).add(w.form, w.proper, order)
            # Two content words with only a space between them make a phrase.
            if prev is not None and not text[prev.end : w.start].strip():
                phrase = phrases.setdefault(f"{prev.key} {w.key}", _Tally())
                phrase.add(f"{prev.form} {w.form}", prev.proper and w.proper, order)
            prev = w
    return words, phrases


def _rank_terms(words: dict[str, _Tally], phrases: dict[str, _Tally], top: int) -> list[Counted]:
    phrases = {k: t for k, t in phrases.items() if t.count >= 2}  # a phrase must repeat
    # A word that only ever appears inside a kept phrase adds nothing beside it.
    inside = Counter(w for k, t in phrases.items() for w in k.split() for _ in range(t.count))
    ranked = [
        (t.score(False), -t.first, t.shown(k), t.count)
        for k, t in words.items()
        if inside[k] < t.count
    ]
    ranked += [
        (t.score(True), -t.first, " ".join(words[w].shown(w) for w in k.split()), t.count)
        for k, t in phrases.items()
    ]
    ranked.sort(key=lambda r: (r[0], r[1]), reverse=True)
    return [Counted(term, count) for _, _, term, count in ranked[: max(top, 0)]]


def salient_terms(speech: Sequence[str], speakers: Sequence[str], top: int) -> list[Counted]:
    """The `top` most salient words and repeated two-word phrases of the speech."""
    skip = frozenset(p.lower() for name in speakers for p in _WORD.findall(name))
    return _rank_terms(*_tally_terms(speech, skip), top)


# --- Numbers and dates ------------------------------------------------------

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"\d{1,2}(?:st|nd|rd|th)?"
_WEEKDAY = r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days?"
_AMPM = r"(?:\s?(?:[ap]\.m\.|[ap]m\b|[AP]M\b))"
_DATES = re.compile(
    r"(?<![\w/:.-])(?:"
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?"  # 2024-05-01, 2024-05-01T10:30
    r"|\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})(?![\w/])"  # 5/1/2024
    rf"|{_MONTH}\.?\s{_DAY}\b(?:,?\s\d{{4}}\b)?"  # March 3, March 3rd, 2024
    rf"|{_DAY}\s(?:of\s)?{_MONTH}\b(?:,?\s\d{{4}}\b)?"  # 3 March, 3rd of March
    rf"|{_MONTH}\s\d{{4}}\b"  # March 2024
    rf"|(?:(?:next|last|this)\s)?{_WEEKDAY}\b"  # Friday, next Friday
    r"|(?i:to-?day|to-?morrow|yesterday|to-?night|(?:next|last|this)\s"
    r"(?:week|weekend|month|quarter|year))\b"
    rf"|(?:[01]?\d|2[0-4]):[0-5]\d(?::[0-5]\d)?{_AMPM}?(?!\d|:\d)"  # 10:30, 9:15 pm
    rf"|(?:1[0-2]|0?[1-9]){_AMPM}"  # 3pm, 11 a.m.
    r"|Q[1-4](?:\s\d{4})?\b"  # Q3, Q3 2024
    r"|(?:(?<=\bin )|(?<=\bby )|(?<=\bsince )|(?<=\buntil )|(?<=\bfrom ))(?:19|20)\d\d\b"
    r")"
)
# Money, percentages, decimals, counts; not digits of a word or code (ssh2, CVE-2024-1234).
_NUMBERS = re.compile(
    r"(?<![\w.:])(?<!\w-)(?:[$€£]\s?)?\d+(?:[.,]\d+)*"
    r"(?:%|(?:st|nd|rd|th|k|K|M|bn|x)\b)?(?![\w%]|:\d)"
)


def dates_and_numbers(speech: Sequence[str]) -> tuple[list[str], list[str]]:
    """(dates, numbers) said, as written, each deduplicated in order of first mention."""
    dates: dict[str, None] = {}
    numbers: dict[str, None] = {}
    for text in speech:
        taken: list[tuple[int, int]] = []
        for m in _DATES.finditer(text):
            dates.setdefault(m.group(), None)
            taken.append(m.span())
        for m in _NUMBERS.finditer(text):
            if not any(s < m.end() and m.start() < e for s, e in taken):
                numbers.setdefault(m.group(), None)
    return list(dates), list(numbers)


def transcript_facts(lines: Sequence[str], top: int = 8) -> LineFacts:
    """Speakers, salient terms, numbers and dates of a span of transcript lines."""
    turns = _turns(lines)
    speakers = sorted(turns.counts.items(), key=lambda kv: -kv[1])  # stable: first seen
    dates, numbers = dates_and_numbers(turns.speech)
    return LineFacts(
        profile="transcript",
        lines=len(lines),
        speakers=tuple(Counted(name, n) for name, n in speakers),
        terms=tuple(salient_terms(turns.speech, list(turns.counts), top)),
        numbers=tuple(numbers),
        dates=tuple(dates),
    )


# --- Plays as dialogue --------------------------------------------------------

_BOLD_SPEAKER = re.compile(r"^\*\*([^*]+)\*\*\s*$")
_UNESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+.!-])")


def _plain(text: str) -> str:
    """Markdown emphasis and escapes removed: what an actor would say."""
    return re.sub(r"\s+", " ", _UNESCAPE.sub(r"\1", text.replace("_", "").replace("*", ""))).strip()


def _direction(text: str) -> str:
    return _plain(text).strip("[]")


def play_as_dialogue(markdown: str) -> list[str]:
    """A play in markdown ("**HAMLET**" then the speech) as lines "HAMLET: To be, or not...".

    Every verse line carries its speaker, so any window of lines says who speaks;
    headings and stage directions become "(...)" lines.
    """
    out: list[str] = []
    speaker: str | None = None  # kept over a stage direction that interrupts a speech
    fresh = True  # at the start of a paragraph, where a stage direction may open
    aside = ""  # an in-speech direction (_[Aside]_) joins the verse line after it
    wrapped: list[str] = []  # a stage direction may wrap over several lines
    for raw in [*markdown.splitlines(), ""]:
        line = raw.strip()
        if wrapped:
            wrapped.append(line)
            if not line or line.endswith(("_", "*")):
                out.append(f"({_direction(' '.join(wrapped))})")
                wrapped = []
        elif not line:
            out += [f"({aside})"] if aside else []
            fresh, aside = True, ""
        elif line.startswith("#"):
            out.append(f"({_plain(line.lstrip('#'))})")
            speaker = None
        elif m := _BOLD_SPEAKER.match(line):
            speaker, fresh = _plain(m.group(1)), False
        elif fresh and line.startswith(("_", "*")):
            if len(line) > 1 and line.endswith(("_", "*")):
                out.append(f"({_direction(line)})")
            else:
                wrapped = [line]
        elif _DIRECTION.match(line):
            aside = "; ".join(filter(None, [aside, _direction(line)]))
        else:
            said = f"({aside}) {_plain(line)}" if aside else _plain(line)
            out.append(f"{speaker}: {said}" if speaker else said)
            fresh, aside = False, ""
    return out
