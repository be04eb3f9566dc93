"""Does a summary mention a log template? A strict word-overlap rule, reported as a metric.

The rule has four parts, each commented where it is applied: 1. content words
(`content_stems`), 2. stems (`stem`), 3. how many must appear (`_needed`), 4. templates with
no content words (`mention_counts`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .sentences import STOPWORDS

_PLACEHOLDER = re.compile(r"<[^<>\s]*>")
_ALPHA = re.compile(r"[A-Za-z]+")
# (suffix, replacement), longest first; the stem keeps at least 3 letters.
_SUFFIXES = (
    ("ations", ""),
    ("ation", ""),
    ("ings", ""),
    ("ing", ""),
    ("ures", ""),
    ("ure", ""),
    ("ions", ""),
    ("ion", ""),
    ("ied", "y"),
    ("ies", "y"),
    ("ers", ""),
    ("er", ""),
    ("ed", ""),
    ("es", ""),
    ("s", ""),
)


# Rule 2: words compare by a light stem: lowercase, one common suffix stripped (-ation, -ing,
# -ure, -ion, -ed, -es, -er, -s; -ied/-ies become -y), a final "e" dropped, then the first 5
# letters. So failed/failure/fails all give "fail", refused/refuse give "refus".
def stem(word: str) -> str:
    """Light stem: failed, failure and fails all give "fail"."""
    word = word.lower()
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + replacement
            break
    if word.endswith("e") and len(word) > 3:
        word = word[:-1]
    return word[:5]


# Rule 1: a template's content words are its alphabetic runs of 3+ letters outside
# placeholders (<*>, <IP>, <NUM>, ...), minus stopwords (for, from, the, ...; "port" stays).
# "ssh2" gives "ssh", "pam_unix(sshd:auth)" gives pam, unix, sshd, auth. Content words
# sharing a stem count once.
def content_stems(template: str) -> frozenset[str]:
    """The stems of a template's content words (rule 1 and 2 of the module docstring)."""
    words = _ALPHA.findall(_PLACEHOLDER.sub(" ", template))
    return frozenset(stem(w) for w in words if len(w) >= 3 and w.lower() not in STOPWORDS)


# Rule 3: a template is mentioned when the text holds at least half of its content stems
# (rounded up) and never fewer than two, unless it has only one: "Invalid user <*> from <IP>"
# needs both "invalid" and "user", so a summary saying "user root" alone does not mention it.
def _needed(content: int) -> int:
    return min(content, max(2, math.ceil(content / 2)))


def _text_stems(text: str) -> frozenset[str]:
    return frozenset(stem(w) for w in _ALPHA.findall(text))


def _mentioned(stems: frozenset[str], text_stems: frozenset[str]) -> bool:
    return len(stems & text_stems) >= _needed(len(stems))


def template_mentioned(template: str, text: str) -> bool:
    """Whether `text` mentions `template` by the rule of the module docstring.

    A template with no content words is never mentioned (see mention_counts).
    """
    stems = content_stems(template)
    return bool(stems) and _mentioned(stems, _text_stems(text))


# Rule 4: a template with no content words (all placeholders and stopwords) cannot be
# mentioned by words: it is left out of recall's denominator, not counted as missed.
def mention_counts(templates: Sequence[str], text: str) -> tuple[int, int]:
    """(mentioned, mentionable) over `templates`: those with content words only.

    Sum these over many summaries for an honest pooled recall.
    """
    text_stems = _text_stems(text)
    mentionable = [s for s in map(content_stems, templates) if s]
    return sum(_mentioned(s, text_stems) for s in mentionable), len(mentionable)


def top_template_recall(templates: Sequence[str], text: str) -> float:
    """Share of the mentionable `templates` (e.g. a span's top 3) that `text` mentions.

    1.0 when none is mentionable (nothing to miss); use mention_counts to tell that case apart.
    """
    mentioned, mentionable = mention_counts(templates, text)
    return mentioned / mentionable if mentionable else 1.0
