"""Which severity words (records.SEVERITIES) a log line carries; each counts once per line.

Words match whole and in any case; level fields ("ERROR", "[error]", "level=warn", "<3>"
priorities, glog/logcat "E") count as the word they stand for. facts.entities finds them as
it scans a line (WORD_BRANCHES, PHRASES, line_level); entities.severities() asks it.
"""

from __future__ import annotations

import re

from .records import SEVERITIES

# The rules, in one table: severity -> the words and two-word phrases that carry it.
RULES: dict[str, tuple[str, ...]] = {
    "critical": ("crit", "critical", "fatal", "emerg", "emergency", "alert", "panic"),
    "error": ("err", "error", "errors"),
    "warning": ("warn", "warning", "warnings"),
    "failure": (
        *("fail", "fails", "failed", "failure", "failures"),
        *("unable", "cannot", "refused", "timeout", "timeouts", "timed out"),
    ),
    # An unknown account name is an authentication denial, as fail2ban counts it.
    "denied": (
        *("denied", "forbidden", "unauthorized", "unauthorised", "not allowed"),
        *("reject", "rejected", "invalid user", "illegal user"),
    ),
}
# Syslog priority (PRI % 8) -> severity; 5..7 (notice, info, debug) carry none.
PRIORITY = {0: "critical", 1: "critical", 2: "critical", 3: "error", 4: "warning"}
# One-letter level fields: glog "E0102 03:04:05", logcat "E/Tag(123):", "... 5678 E Tag:".
LETTER = {"F": "critical", "E": "error", "W": "warning"}

SEVERITY_OF = {word: severity for severity, words in RULES.items() for word in words}
# Two-word phrases, as (first word, second word), in lower case -> severity.
PHRASES = {
    (word.split()[0], word.split()[1]): severity
    for word, severity in SEVERITY_OF.items()
    if " " in word
}


def _any_case(text: str) -> str:
    return "".join(f"[{c.upper()}{c}]" if c.isalpha() else re.escape(c) for c in text)


def _word_branches() -> tuple[str, ...]:
    """The table's words as regex branches in any case, one per first letter (each opens
    with a character set, so `re` skips it at once); a word must not run on ("terror")."""
    by_first: dict[str, list[str]] = {}
    for word in sorted(SEVERITY_OF, key=len, reverse=True):  # "errors" before "err"
        if " " in word:
            continue  # phrases span two tokens: facts.entities matches them with PHRASES
        by_first.setdefault(word[0], []).append(_any_case(word[1:]))
    return tuple(
        f"{_any_case(first)}(?:{'|'.join(rest)})(?!\\w)" for first, rest in by_first.items()
    )


# Branches of facts.entities' token regex; they carry no group (the match's lastgroup: None).
WORD_BRANCHES = _word_branches()
_LETTER_LEVEL = re.compile(
    r"([FEW])(?:\d{4} \d\d:\d\d:\d\d|/[^(\s]+\( *\d+\):)"  # glog; logcat "brief"
    r"|\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} +\d+ +\d+ ([FEW]) "  # logcat "threadtime"
)
_PRIORITY = re.compile(r"<(\d{1,3})>")
_SECOND = frozenset("0123456789/")  # the character after a glog or logcat "brief" letter

LEVEL_STARTS = frozenset("<FEW0123456789")  # the first characters line_level looks for
# Level names, which a syslog header must not take for a host or a program
# ("2024-01-02 03:04:05 ERROR db: ..."); NOTICE, SECURITY, VERBOSE, DTMF: Asterisk's too.
LEVEL_WORDS = frozenset(
    (
        *("info", "warn", "warning", "error", "err", "debug", "notice", "note", "crit"),
        *("critical", "fatal", "trace", "alert", "emerg", "security", "verbose", "dtmf"),
    )
)


def line_level(line: str) -> str | None:
    """The severity a line's leading "<PRI>" or one-letter level field stands for, if any."""
    if line[:1] == "<":
        priority = _PRIORITY.match(line)
        return None if priority is None else PRIORITY.get(int(priority.group(1)) % 8)
    if not (line[1:2] in _SECOND if line[:1] in LETTER else line[2:3] == "-"):
        return None  # "Feb 25 ...", "2024-01-02 ...": no glog or logcat line
    letter = _LETTER_LEVEL.match(line)
    return None if letter is None else LETTER[letter.group(1) or letter.group(2)]


# A set of severities as bits of an int (cheap to merge per word): severity -> its bit, and
# bits -> the severities in SEVERITIES order.
BIT = {severity: 1 << index for index, severity in enumerate(SEVERITIES)}
IN_ORDER = tuple(
    tuple(severity for severity in SEVERITIES if bits & BIT[severity])
    for bits in range(1 << len(SEVERITIES))
)
