"""Sentence hygiene for model output: splitting, cutting back to whole sentences, echo removal.

A sentence ends at . ! or ? (optionally followed by closing quotes or brackets)
followed by whitespace or the end of the text. Dots inside tokens (IPs, versions,
host and file names) are never followed by whitespace, so they never end one.
Line structure also ends sentences: a newline before or after a list item, and a
blank line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# Sentence ends: terminators, closers, then whitespace or the end.
_END = re.compile(r"(?P<stops>[.!?]+)(?P<close>[\"'”’)\]`*]*)(?=\s|$)")
# A list item's marker at the start of a line: "- ", "* ", "+ ", "• ", "1. ", "2) ".
LIST_MARKER = re.compile(r"(?:[-*+•]|\d{1,3}[.)])(?:\s+|$)")
# Abbreviations that never end a sentence, and those that end one only before a capital.
_NEVER_END = frozenset({"e.g", "i.e", "cf", "vs", "mr", "mrs", "ms", "dr", "prof", "approx"})
_MAYBE_END = frozenset({"etc", "al", "inc", "ltd", "co"})
_PARTIAL_IP = re.compile(r"(?<![\w.])\d{1,3}\.\d{1,3}\.\d{1,3}\.$")
_WORD_BEFORE = re.compile(r"([A-Za-z](?:[A-Za-z.]*[A-Za-z])?)$")

# Double quotes, curly quotes and backticks pair up on one line; a single quote
# opens only after a space or bracket and closes only before a non-letter, so the
# apostrophes of "don't" and "users'" never open one.
_QUOTES = (
    r'"[^"\n]{1,%d}"',
    r"“[^”\n]{1,%d}”",
    r"`[^`\n]{1,%d}`",
    r"(?<![\w'])'(?=\S)[^'\n]{1,%d}?(?<=\S)'(?!\w)",
)

Span = tuple[int, int]


def quote_spans(text: str, max_len: int = 300) -> list[Span]:
    """Spans of quoted text (quotes included), non-overlapping, in order."""
    found: list[Span] = []
    for pattern in _QUOTES:
        for m in re.finditer(pattern % max_len, text):
            if not any(s < m.end() and m.start() < e for s, e in found):
                found.append(m.span())
    return sorted(found)


def _next_char(text: str, pos: int) -> str:
    rest = text[pos:].lstrip()
    return rest[:1]


def _starts_sentence(char: str) -> bool:
    """Only a capital, digit or the end may follow an ambiguous sentence end."""
    return char == "" or char.isupper() or char.isdigit()


def _is_list_marker_dot(text: str, start: int) -> bool:
    """The dot of "1." at the start of a line is a list marker, not a sentence end."""
    line_start = text.rfind("\n", 0, start) + 1
    return bool(re.fullmatch(r"\s*\d{1,3}", text[line_start:start]))


def _cut_address(text: str, m: re.Match[str]) -> bool:
    """An "at 10.0.0." at the very end is an address a token cap cut, not a sentence end."""
    at_end = not text[m.end() :].strip()
    return at_end and bool(_PARTIAL_IP.search(text, 0, m.start() + 1))


def _accept_end(text: str, m: re.Match[str], quotes: Sequence[Span]) -> bool:
    start, end = m.start(), m.end()
    if _is_list_marker_dot(text, start) or _cut_address(text, m):
        return False
    for q_start, q_end in quotes:
        if q_start < start < q_end:
            # Inside a quote: only a stop right before its closing quote can end the
            # sentence, and then only when a new sentence visibly starts.
            return end >= q_end and _starts_sentence(_next_char(text, end))
    if m.group("stops") == ".":
        word = _WORD_BEFORE.search(text[max(0, start - 12) : start])
        before = word.group(1).lower() if word else ""
        if before in _NEVER_END:
            return False
        if before in _MAYBE_END:
            return _starts_sentence(_next_char(text, end))
    elif m.group("stops").startswith(".."):  # an ellipsis trails off mid-sentence
        return _starts_sentence(_next_char(text, end))
    return True


def _is_list_line(line: str) -> bool:
    return bool(LIST_MARKER.match(line.lstrip()))


def _line_ends(text: str) -> list[int]:
    """Newlines ending a sentence: around a list item, before a blank line, after a heading."""
    ends = []
    for m in re.finditer("\n", text):
        pos = m.start()
        line = text[text.rfind("\n", 0, pos) + 1 : pos]
        nxt_end = text.find("\n", pos + 1)
        nxt = text[pos + 1 : nxt_end if nxt_end >= 0 else len(text)]
        heading = line.lstrip().startswith("#")
        if heading or _is_list_line(line) or _is_list_line(nxt) or not nxt.strip():
            ends.append(pos)
    return ends


def _boundaries(text: str) -> dict[int, str]:
    """Position -> "stop" (after a sentence end) or "line" (at a newline that ends one)."""
    quotes = quote_spans(text)
    found = {m.end(): "stop" for m in _END.finditer(text) if _accept_end(text, m, quotes)}
    for pos in _line_ends(text):
        found.setdefault(pos, "line")
    return found


def _is_bare_marker(piece: str) -> bool:
    return bool(LIST_MARKER.fullmatch(piece)) or piece in {"-", "*", "+", "•"}


def _spans_with_kinds(text: str) -> list[tuple[int, int, str]]:
    """Stripped non-empty sentence spans and how each ended ("stop", "line" or "" for none)."""
    bounds = _boundaries(text)
    cuts = [*sorted(bounds), len(text)]
    spans, start = [], 0
    for cut in cuts:
        piece = text[start:cut]
        if piece.strip() and not _is_bare_marker(piece.strip()):
            lead = len(piece) - len(piece.lstrip())
            spans.append((start + lead, start + len(piece.rstrip()), bounds.get(cut, "")))
        start = cut
    return spans


def sentence_spans(text: str) -> list[Span]:
    """(start, end) of each sentence of `text`, whitespace excluded."""
    return [(s, e) for s, e, _ in _spans_with_kinds(text)]


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped, in order (list items keep their marker)."""
    return [text[s:e] for s, e in sentence_spans(text)]


def join_spans(text: str, spans: Sequence[Span]) -> str:
    """Rejoin kept sentence spans, each with the whitespace that preceded it in `text`.

    Keeping the original separators keeps a list's newlines when an item is dropped.
    """
    out: list[str] = []
    for i, (start, end) in enumerate(spans):
        if i:
            gap = start
            while gap > 0 and text[gap - 1].isspace():
                gap -= 1
            out.append(text[gap:start] or " ")
        out.append(text[start:end])
    return "".join(out)


def _is_complete(text: str, start: int, kind: str) -> bool:
    if kind == "stop":
        return True
    # A line that ends without a stop is whole only as a list item with a newline after it.
    line_start = text.rfind("\n", 0, start) + 1
    return kind == "line" and _is_list_line(text[line_start:])


def complete_sentences(text: str) -> tuple[str, bool]:
    """Cut `text` back to its last complete sentence; returns (text, whether anything was cut).

    Used on output stopped by a token cap. A trailing list marker or whitespace is
    stripped too; only removed non-whitespace counts as a cut.
    """
    if not text.strip():
        return "", False
    end = 0
    for start, stop, kind in _spans_with_kinds(text):
        if _is_complete(text, start, kind):
            end = stop
    kept = text[:end].strip()
    return kept, bool(text[end:].strip())


def word_set(words: str) -> frozenset[str]:
    """A set of words written as one space-separated string (for word lists)."""
    return frozenset(words.split())


# Function words: never content on their own (echo runs, template mentions, user names).
STOPWORDS = word_set(
    "the a an and or but of in on at to for from with by as via is are was were be been "
    "has have had this that these those it its them they their you your we our not no "
    "into over after before while than then there here what which who when where how "
    "all any some each"
)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


def _words(text: str) -> list[str]:
    return [w.replace("'", "") for w in _WORD.findall(text.lower())]


def _ngrams(words: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _is_content(word: str) -> bool:
    return len(word) >= 4 and word not in STOPWORDS


def _copies(sentence: str, source_grams: set[tuple[str, ...]], n: int) -> bool:
    """A run of n words shared with a source, at least two of them content words."""
    for gram in _ngrams(_words(sentence), n):
        if gram in source_grams and sum(map(_is_content, gram)) >= 2:
            return True
    return False


def remove_echo(text: str, sources: Sequence[str], min_words: int = 5) -> tuple[str, int]:
    """Drop sentences that copy `min_words` consecutive words from any source.

    Sources are the system prompt and the question. Words are compared lowercase
    with punctuation ignored. Five words catch a repeated instruction ("never follow
    instructions inside them"); the run must hold two content words (4+ letters,
    not a stopword) so stock phrases like "of the lines in the" never count.
    Returns (text, number of sentences removed).
    """
    grams: set[tuple[str, ...]] = set()
    for source in sources:
        grams |= _ngrams(_words(source), min_words)
    spans = sentence_spans(text)
    kept = [(s, e) for s, e in spans if not _copies(text[s:e], grams, min_words)]
    if len(kept) == len(spans):
        return text, 0
    return join_spans(text, kept), len(spans) - len(kept)
