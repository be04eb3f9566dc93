"""Checkable claims in a summary (addresses, numbers, names, dates...) and their evidence.

A claim is supported when the text the model saw, or the facts it was given,
holds it. check_summary drops (or flags) the sentences whose claims are not.
"""

from __future__ import annotations

import ipaddress
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any, Literal

from .records import SummaryFacts, json_ready
from .sentences import STOPWORDS, join_spans, quote_spans, sentence_spans, word_set

Policy = Literal["drop-sentence", "flag"]
POLICIES = ("drop-sentence", "flag")
# Extraction order: an earlier kind claims its characters first, so the octets of
# an IP or the digits of a time are never also numbers.
CLAIM_KINDS = ("quoted", "ip", "date", "time", "path", "user", "host", "number")
# The kinds scanned from the evidence: ips, dates, times and numbers are looked up
# in the sets found; hosts and paths are scanned so that their digits are no numbers.
_SCANNED = ("ip", "date", "time", "path", "host", "number")
_IN_SETS = ("ip", "date", "time", "number")
Found = tuple[int, int, str]  # start, end, text as written


@dataclass(frozen=True)
class Claim:
    kind: str  # one of CLAIM_KINDS
    text: str  # as written (a quoted claim without its quotes)
    sentence_index: int  # into sentences.split_sentences(summary)

    @property
    def norm(self) -> str:
        """The form evidence is looked up by."""
        return normalize(self.kind, self.text)


_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?(?!\.?\w)")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?"
    r"(?![\w:]|\.\w)"
)
_MON = (
    r"(?P<mon>Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DAY = r"(?P<day>\d{1,2})"
_YEAR = r"(?P<year>\d{4})"
_DATES = tuple(
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"(?<![\w.\-/]){_YEAR}(?P<sep>[/\-])(?P<nmon>\d{{1,2}})(?P=sep){_DAY}(?=T\d|(?![\w\-/]))",
        rf"(?<![\w.\-/]){_DAY}(?P<sep>[/\-]){_MON}(?P=sep){_YEAR}(?!\w)",
        rf"\b{_MON}\.?\s+{_DAY}(?:st|nd|rd|th)?\b(?!:)(?:,?\s+{_YEAR}\b(?!:))?",
        rf"\b{_DAY}(?:st|nd|rd|th)?\s+(?:of\s+)?{_MON}\b(?:,?\s+{_YEAR}\b(?!:))?",
        r"(?<![\w/.])(?P<any>\d{1,2}/\d{1,2}/\d{2,4})(?![\w/])",
    )
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_AMPM = r"(?:\s?(?P<ap>[ap]m|[ap]\.m\.))"
_TIMES = (
    re.compile(
        # after a space, or after the T of 2019-07-08T17:40:16; never a UTC offset (-04:00)
        rf"(?:(?<=\dT)|(?<![\w:.]))(?<!\d[+\-])(?P<h>\d{{1,2}}):(?P<m>\d{{2}})"
        rf"(?::(?P<s>\d{{2}})(?:[.,]\d+)?)?{_AMPM}?(?![\w:])",
        re.IGNORECASE,
    ),
    re.compile(rf"(?<![\w:.])(?P<h>\d{{1,2}}){_AMPM}(?!\w)", re.IGNORECASE),
)
_PATHS = (
    re.compile(r"(?<![\w.:/~\-])~?/[\w.\-~%+@]+(?:/[\w.\-~%+@]*)*"),
    re.compile(r"(?<![\w])[A-Za-z]:\\[^\s\"'<>|]*"),
)
_HOST = re.compile(
    r"(?<![\w.@\-/])(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+"
    r"(?P<tld>[A-Za-z]{2,24})(?![\w\-]|\.\w)"
)
# A dotted name with one of these extensions is a file name (auth.log), a path claim.
_FILE = re.compile(
    r"(?<![\w.@\-/])[\w\-]+(?:\.[\w\-]+)*\.(?:log|txt|conf|cfg|ini|json|ya?ml|xml|html?|php|py"
    r"|sh|js|css|gz|tar|tgz|zip|pid|sock|service|md|csv|sql|db|bak|tmp|key|pem|crt|rb|pl"
    r"|java|go|rs|ts|lock|out|err|pdf|png|jpg|gif|exe|dll|bin|img|iso|deb|rpm)(?![\w\-]|\.\w)",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"(?<![\w.\-])[\w.+\-]+@(?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24}(?![\w\-]|\.\w)")
_USER_CUE = re.compile(
    r"\b(?P<cue>users?|accounts?|usernames?|logins?\s+as|logged\s+in\s+as|by|for)"
    r"(?:\s+|\s*[=:]\s*)",
    re.IGNORECASE,
)
_NAME = re.compile(r"[A-Za-z0-9_$][\w.\-@$]*")
_NAME_SEP = re.compile(r"\s*,\s*(?:and\s+|or\s+)?|\s+(?:and|or)\s+")
# Words that follow "user"/"account" in ordinary prose: never names.
_NOT_NAMES = STOPWORDS | word_set(
    "whose whom could would did does do attempted attempting tried trying failed failing "
    "successfully logged login logins logon session sessions activity authentication auth "
    "credentials password passwords data input request requests access agent id ids "
    "information info list name names management permissions privileges profile profiles "
    "records creation lockout locked lockouts errors error failures failure attempts attempt "
    "invalid unknown valid multiple several various different other others every many more "
    "most accounts account users user new existing same named called known listed reported "
    "flagged blocked banned denied rejected can cannot should will may might must"
)
# After "by"/"for" a name must look like an identifier or be a stock account name.
_ACCOUNTS = word_set(
    "root admin administrator guest test ubuntu oracle postgres mysql nobody git ftp pi "
    "support operator daemon www-data"
)
_NUMBER = re.compile(r"(?<![\w.])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)*(?:\s?%)?(?![\w%]|\.\d)")
_LIST_MARKER = re.compile(r"(?m)^[ \t]*(?:[-*+•]|\d{1,3}[.)])(?=\s)")
_TRAILING = ".,;:)]}'\"!?"


def _quoted(text: str) -> Iterator[Found]:
    spans = quote_spans(text, max_len=400)
    yield from ((s, e, q) for s, e in spans if (q := text[s + 1 : e - 1].strip()))


def _ipv6(m: re.Match[str]) -> str | None:
    """The candidate when it is an IPv6 address (14:34:10 is a time, not one)."""
    try:
        return str(ipaddress.IPv6Address(m.group()))
    except ValueError:
        return None


def _date_norm(m: re.Match[str]) -> str | None:
    """YYYY-MM-DD, --MM-DD without a year (ISO 8601), 01/02/2024 as written (which is
    the month is unknown); None when the match is no calendar date."""
    if m.groupdict().get("any"):
        return m.group("any")
    word = m.groupdict().get("mon")
    if word == "may":  # the verb, not the month
        return None
    month = _MONTHS.index(word[:3].lower()) + 1 if word else int(m.group("nmon"))
    day, year = int(m.group("day")), m.group("year")
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return f"{year}-{month:02d}-{day:02d}" if year else f"--{month:02d}-{day:02d}"


def _time_norm(m: re.Match[str]) -> str | None:
    """HH, HH:MM or HH:MM:SS (24h), as precise as written; None when no clock time."""
    hour, ap = int(m.group("h")), (m.group("ap") or "").replace(".", "").lower()
    if ap:  # 12am is 00, 12pm is 12; 13pm is no time
        hour = hour % 12 + (12 if ap == "pm" else 0) if 1 <= hour <= 12 else 99
    rest = [int(v) for v in (m.groupdict().get("m"), m.groupdict().get("s")) if v is not None]
    if hour > 23 or any(v > 59 for v in rest):
        return None
    return ":".join(f"{p:02d}" for p in (hour, *rest))


def _parsed(
    patterns: tuple[re.Pattern[str], ...],
    text: str,
    parse: Callable[[re.Match[str]], str | None] = lambda m: m.group(),
) -> Iterator[Found]:
    """The matches of `patterns` that `parse` accepts, pattern by pattern."""
    for pattern in patterns:
        for m in pattern.finditer(text):
            if parse(m) is not None:
                yield m.start(), m.end(), m.group()


def _paths(text: str) -> Iterator[Found]:
    for start, _, written in _parsed(_PATHS, text):
        path = written.rstrip(_TRAILING)
        if len(path) > 1:
            yield start, start + len(path), path
    yield from _parsed((_FILE,), text)  # auth.log: before hosts, which would take it


def _one_case_tld(m: re.Match[str]) -> str | None:
    # "logs.The" is a missing space, not a host: real TLDs are written in one case
    return m.group() if m.group("tld").islower() or m.group("tld").isupper() else None


def _is_name(name: str, cue: str) -> bool:
    if name.lower() in _NOT_NAMES or len(name) > 32:
        return False
    # after "by"/"for" only an identifier-shaped word (web-01, user_7) or a stock account
    shaped = any(c.isdigit() or c in "_-@$" for c in name) and any(c.isalpha() for c in name)
    return cue.lower() not in ("by", "for") or shaped or name.lower() in _ACCOUNTS


def _users(text: str) -> Iterator[Found]:
    yield from _parsed((_EMAIL,), text)
    for cue in _USER_CUE.finditer(text):
        pos = cue.end()
        while m := _NAME.match(text, pos):  # "users root, admin and test"
            name = m.group().rstrip(".-")
            if not _is_name(name, cue.group("cue")):
                break
            yield m.start(), m.start() + len(name), name
            sep = _NAME_SEP.match(text, m.start() + len(name))
            if not sep:
                break
            pos = sep.end()


_EXTRACTORS: dict[str, Callable[[str], Iterable[Found]]] = {
    "marker": lambda text: _parsed((_LIST_MARKER,), text),  # "1." opening a list item
    "quoted": _quoted,
    # Every dotted quad counts, leading zeros (192.030.0.6) included: the log wrote it.
    "ip": lambda text: (*_parsed((_IPV6,), text, _ipv6), *_parsed((_IPV4,), text)),
    "date": lambda text: _parsed(_DATES, text, _date_norm),
    "time": lambda text: _parsed(_TIMES, text, _time_norm),
    "path": _paths,
    "user": _users,
    "host": lambda text: _parsed((_HOST,), text, _one_case_tld),
    "number": lambda text: _parsed((_NUMBER,), text),
}


def _scan(text: str, kinds: tuple[str, ...] = CLAIM_KINDS) -> list[tuple[int, str, str]]:
    """(start, kind, text) of every claim; a character belongs to at most one claim."""
    taken = bytearray(len(text))
    found = []
    for kind in ("marker", *kinds):
        for start, end, written in _EXTRACTORS[kind](text):
            if not any(taken[start:end]):
                taken[start:end] = b"\1" * (end - start)
                found.append((start, kind, written))
    return sorted(f for f in found if f[1] != "marker")


def extract_claims(text: str) -> list[Claim]:
    """The checkable claims of a summary, in text order."""
    starts = [s for s, _ in sentence_spans(text)]
    return [Claim(k, w, max(bisect_right(starts, pos) - 1, 0)) for pos, k, w in _scan(text)]


def _norm_ip(text: str) -> str:
    # A CIDR claim stands for its network address; ipaddress rejects 192.030.0.6.
    bare = re.sub(r"\b0+(?=\d)", "", text.split("/")[0])
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        return bare.lower()
    # ::ffff:1.2.3.4 is the IPv4 host 1.2.3.4; str() gives the compressed IPv6 form
    return str(getattr(addr, "ipv4_mapped", None) or addr)


def _reparsed(
    patterns: tuple[re.Pattern[str], ...], parse: Callable[[re.Match[str]], str | None], text: str
) -> str:
    """Normalize a date or time by matching the whole claim again."""
    found = (parse(m) for p in patterns if (m := p.fullmatch(text)))
    return next((n for n in found if n), text.lower())


def _norm_number(text: str) -> str:
    """1,234 -> 1234, 3.50 -> 3.5, 007 -> 7; a version (1.2.3) as written; % kept."""
    digits = text.rstrip("% ").replace(",", "")
    if digits.count(".") <= 1:
        digits = format(Decimal(digits).normalize(), "f")
    return digits + ("%" if text.endswith("%") else "")


def _norm_words(text: str) -> str:
    return " ".join(text.lower().split()).strip(_TRAILING + "<>")


_NORMALIZERS: dict[str, Callable[[str], str]] = {
    "ip": _norm_ip,
    "date": lambda text: _reparsed(_DATES, _date_norm, text),
    "time": lambda text: _reparsed(_TIMES, _time_norm, text),
    "number": _norm_number,
}


def normalize(kind: str, text: str) -> str:
    return _NORMALIZERS.get(kind, _norm_words)(text)


def _fact_texts(facts: SummaryFacts) -> Iterator[str]:
    for span in (facts.since_last, facts.window):
        yield from (text for t in span.templates for text in (t.template, t.example))
        for values in (*span.entities.values(), span.speakers, span.terms):
            yield from (c.value for c in values)
        yield from (*span.numbers, *span.dates, span.first_time or "", span.last_time or "")


def _fact_counts(facts: SummaryFacts) -> Iterator[int]:
    yield from (facts.templates_total, facts.templates_evicted)
    for span in (facts.since_last, facts.window):
        yield from (span.lines, *(t.count for t in span.templates), *span.severity.values())
        for values in (*span.entities.values(), span.speakers, span.terms):
            yield from (c.count for c in values)


class Evidence:
    """What a summary may rest on: the window text the model saw and the facts it was given.

    Built once per summary. IPs, dates, times and numbers are looked up in sets
    scanned from the text; hosts, users, paths and quotes as token-bounded
    substrings (case-insensitive, whitespace collapsed). Numbers also match any
    exact count of the facts.
    """

    def __init__(self, window_text: str, facts: SummaryFacts | None = None) -> None:
        corpus = "\n".join([window_text, *(_fact_texts(facts) if facts else ())])
        self._flat = " " + _norm_words(corpus.replace("\n", " ")) + " "
        self._seen: dict[str, set[str]] = {kind: set() for kind in _IN_SETS}
        for _, kind, written in _scan(corpus, _SCANNED):
            if kind not in _IN_SETS:
                continue
            norm = normalize(kind, written)
            # a time seen at 14:34:10 supports claims of 14, 14:34 and 14:34:10
            self._seen[kind].update([norm[:2], norm[:5], norm] if kind == "time" else [norm])
            if kind == "date" and norm[:4].isdigit():
                self._seen[kind].add("--" + norm[5:])  # a dated line supports "Feb 25" too
        counts = _fact_counts(facts) if facts else ()
        self._seen["number"].update(_norm_number(str(c)) for c in counts)

    def supports(self, claim: Claim) -> bool:
        norm = claim.norm
        if claim.kind in _IN_SETS:
            return norm in self._seen[claim.kind]
        return bool(norm) and _holds(self._flat, norm)


def _holds(flat: str, needle: str) -> bool:
    """`needle` occurs in `flat` as whole tokens: "10.0.0.1" not inside "10.0.0.12"."""
    left = r"(?<![\w.\-])" if needle[0].isalnum() else ""
    right = r"(?![\w\-]|\.\w)" if needle[-1].isalnum() else ""
    return re.search(left + re.escape(needle) + right, flat) is not None


@dataclass(frozen=True)
class UnsupportedClaim:
    kind: str
    text: str
    sentence: str  # the sentence holding it, as written


@dataclass(frozen=True)
class Verification:
    """How a summary's claims fared. checked/supported describe the model's text;
    checked_after/supported_after the published text (after drop-sentence)."""

    policy: str
    checked: int
    supported: int
    unsupported: tuple[UnsupportedClaim, ...]
    removed_sentences: tuple[str, ...]
    checked_after: int
    supported_after: int

    @property
    def precision(self) -> float:
        return self.supported / self.checked if self.checked else 1.0

    @property
    def precision_after(self) -> float:
        return self.supported_after / self.checked_after if self.checked_after else 1.0

    def as_dict(self) -> dict[str, Any]:
        precision = {"precision": self.precision, "precision_after": self.precision_after}
        return {**json_ready(asdict(self)), **precision}


@dataclass(frozen=True)
class CheckedSummary:
    text: str  # what is published
    verification: Verification


def check_summary(
    text: str, evidence: Evidence, policy: Policy = "drop-sentence"
) -> CheckedSummary:
    """Check every claim of `text`; with drop-sentence, remove the sentences holding an
    unsupported one (list items keep their newlines); with flag, only report them."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
    spans = sentence_spans(text)
    claims = extract_claims(text)
    bad = [c for c in claims if not evidence.supports(c)]
    drop = {c.sentence_index for c in bad} if policy == "drop-sentence" else set()
    kept = [span for i, span in enumerate(spans) if i not in drop]
    published = join_spans(text, kept) if drop else text
    after = extract_claims(published) if drop else claims
    verification = Verification(
        policy=policy,
        checked=len(claims),
        supported=len(claims) - len(bad),
        unsupported=tuple(
            UnsupportedClaim(c.kind, c.text, text[slice(*spans[c.sentence_index])]) for c in bad
        ),
        removed_sentences=tuple(text[s:e] for i, (s, e) in enumerate(spans) if i in drop),
        checked_after=len(after),
        supported_after=sum(evidence.supports(c) for c in after),
    )
    return CheckedSummary(published, verification)
