"""Tell a window of log lines from one of transcript or prose: a cheap vote per line."""

from __future__ import annotations

import re
from collections.abc import Sequence

from .records import Profile
from .transcript import split_speaker

SAMPLE = 200  # lines looked at, spread evenly over the window
HEAD = 240  # characters of a line looked at: a log line shows its shape early
LEVEL_HEAD = 64  # where a log level stands, if the line has one
TOKENS = 16  # words weighed for function words
# Digits and punctuation per character: prose runs near 0.03, log lines past 0.3.
SYMBOLS_PROSE = 0.08
SYMBOLS_LOG = 0.25
SHORT = 16  # characters

_MON = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
# A timestamp that opens the line, in the shapes servers write.
_LEAD_TIME = re.compile(
    r"^[\[@(<]?\s*(?:"
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 2015-04-16T18:02:50, 2014/04/02 (nginx)
    r"|\d{6}\s\d{6}\b"  # 081109 203615 (HDFS)
    rf"|{_MON}\s+\d{{1,2}}\s+\d{{1,2}}:\d\d"  # Jun 14 15:16:01 (syslog)
    rf"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\w*,?\s+{_MON}"  # [Thu Jul 11 01:21:44 2013]
    rf"|\d{{1,2}}/{_MON}/\d{{4}}"  # [10/Oct/2000:13:55:36 (access log)
    r"|\d+\.\d+\]"  # [   12.345678] (dmesg)
    r"|\d{9,}(?:\.\d+)?\b"  # 1700000000.123 (epoch)
    r"|[0-9a-f]{16,}"  # @400000004c91b044077a9e94 (tai64n)
    r")"
)
# The patterns below open with a literal character where they can: the regex engine
# then skips ahead to it, which keeps a line's vote at a few microseconds.
_PROGRAM_PID = re.compile(r"\[\d+\]:")  # sshd[1643]:
_LEVELS = (
    *("INFO", "WARN", "ERROR", "DEBUG", "TRACE", "FATAL", "CRIT", "NOTICE", "SEVERE"),
    *("error]", "warn]", "notice]", "info]", "debug]", "crit]", "alert]", "emerg]"),
    "[Warning]",
)
_ADDRESS = re.compile(
    r"\.\d{1,3}\.\d{1,3}\.\d"  # IPv4: 192.0.2.1
    r"|:[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:[0-9a-fA-F]{1,4}:"  # IPv6, MAC
)
_CLOCK = re.compile(r":\d\d:\d\d")  # 14:34:10, seconds included
_PATH = re.compile(r"/[A-Za-z_.~-][\w.~-]*/")  # /var/log/, not 5/1/2024
_FUNCTION_WORDS = frozenset(
    (
        *("the", "a", "an", "and", "to", "of", "i", "you", "we", "he", "she", "it", "is"),
        *("are", "was", "be", "that", "this", "my", "your", "our", "so", "but", "what"),
        *("have", "will", "do", "me", "his", "her", "they", "if", "just", "think", "know"),
        "not",
    )
)
_PUNCTUATION = "\"'“”‘’()[]{},.;:!?-"
# Letters and blanks: deleting them leaves a line's digits and symbols.
_LETTERS_AND_BLANKS = bytes(range(65, 91)) + bytes(range(97, 123)) + b" \t"


def _symbol_share(line: str) -> float:
    """Share of digits and punctuation among the line's ASCII characters."""
    raw = line.encode("ascii", "ignore")
    return len(raw.translate(None, _LETTERS_AND_BLANKS)) / max(len(raw), 1)


def _log_points(line: str, symbols: float) -> int:
    """Evidence, besides a leading timestamp and a program[pid], that a program wrote it."""
    points = 2 * any(level in line[:LEVEL_HEAD] for level in _LEVELS)
    points += 2 * bool(_ADDRESS.search(line)) + bool(_PATH.search(line))
    points += min(line.count("="), 2)  # key=value fields
    points += 4 * (line.startswith("{") and '":' in line)  # a JSON record
    # A short line's share says little: "(Exit)" is a third punctuation.
    return points + (symbols > SYMBOLS_LOG and len(line) >= SHORT)


def _prose_points(line: str, symbols: float) -> int:
    """Evidence, besides a speaker label, that a person said or wrote it."""
    tokens = line.lower().split(maxsplit=TOKENS)[:TOKENS]
    function_words = sum(t.strip(_PUNCTUATION) in _FUNCTION_WORDS for t in tokens)
    points = 2 * (function_words >= 2) + (function_words * 5 >= len(tokens))
    return points + (symbols < SYMBOLS_PROSE)


def line_vote(line: str) -> int:
    """+1 when a line looks like a log line, -1 when like speech or prose, 0 when unsure."""
    head = line[:HEAD].strip()
    if not head or head.isdigit() or "-->" in head:
        return 0  # blank, or a subtitle's cue number or cue timing
    symbols = _symbol_share(head)
    stamp = 2 * bool(_LEAD_TIME.match(head)) + 3 * bool(_PROGRAM_PID.search(head))
    stamp += bool(_CLOCK.search(head))
    # "Start-Date: 2025-06-24 14:36:25" is a record's field, not someone speaking.
    speaker = symbols < SYMBOLS_LOG and split_speaker(head)[0] is not None
    # Most lines are settled here: a dated program line, or a speaker with no date.
    if stamp >= 3 and not speaker:
        return 1
    if speaker and not stamp:
        return -1
    margin = stamp + _log_points(head, symbols) - 3 * speaker - _prose_points(head, symbols)
    return (margin > 0) - (margin < 0)


def _sample(lines: Sequence[str]) -> Sequence[str]:
    n = len(lines)
    return lines if n <= SAMPLE else [lines[i * n // SAMPLE] for i in range(SAMPLE)]


def detect_profile(lines: Sequence[str]) -> Profile:
    """Say "logs" unless more of the (sampled) lines read as speech or prose than as log lines.

    Ties and empty windows go to "logs": that is what a server stream mostly is.
    """
    votes = sum(line_vote(line) for line in _sample(lines))
    return "transcript" if votes < 0 else "logs"
