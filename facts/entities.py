"""One pass over a log line: its leading timestamp, its entities (ENTITY_KINDS), severities
and a masked copy for template mining (variable parts replaced by <IP>, <NUM>, <TIME>, <HOST>,
<PATH>, <URL>; the leading timestamp, syslog host and pid dropped).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from . import severity
from .addresses import (
    HEX,
    IP4_OCTETS,
    IPV6_AFTER_COLON,
    IPV6_AFTER_FIRST_GROUP,
    IPV6_END,
    OCTET,
    host_or_ip,
    is_domain_tld,
)
from .header import CLF, HMS, MONTH, read_header

# --- entities and masks, token by token -------------------------------------------------------

_NAME = r"[\w.@$\\-]+"
# A token is scanned with a space in front; every branch starts right after one of these
# delimiters (part of the match). `re` skips a branch at once when its first item is a
# literal or a set that does not match: hence "\d\d*" rather than "\d+", and an empty group
# that names the branch at its end (the severity words carry no group at all).
_DELIMITERS = r"[\s\"'(\[<=,@#:;|*{]"
_TOKEN_BRANCHES = (
    r"[hf](?:ttps?|tp)://(?P<uhost>\[[0-9A-Fa-f:.]+\]|[^\s/:\"'<>?#\]]+)(?::\d+)?"
    r"(?P<upath>/[^\s\"'<>?#;,]*)?(?:[?#][^\s\"'<>;,]*)?(?P<url>)",
    # user names in key=value fields: PAM, dovecot, postfix, exim; dovecot's "pam(user,ip)"
    r"user=<(?P<u_angle>[^\s>]+)>",
    rf"(?:r?user|logname|set_id|sasl_username)=(?P<u_field>{_NAME})(?=[\s,;)]|$)",
    r"[pslc](?:am|ql|dap|asswd|asswd-file|heckpassword)\((?P<u_passdb>[^,\s()]+)(?=,)",
    # times inside the line (the leading one goes with the header)
    rf"\d(?:\d/{MONTH}/\d{{4}}:\d\d:\d\d:\d\d(?:\.\d+)?(?=\]|$)"
    rf"|\d{{3}}-\d\d-\d\d(?:T{HMS}(?:Z|[+-]\d\d:?\d\d)?)?(?![\w.-])|\d?:\d\d:\d\d(?:[.,]\d+)?(?![\w:]))"
    r"(?P<stamp>)",
    rf"{HEX}{HEX}:(?:{HEX}{{2}}:){{4,}}{HEX}{{2}}(?![\w:])(?P<mac>)",
    rf":{IPV6_AFTER_COLON}{IPV6_END}(?P<ip6>)",
    rf"{HEX}{HEX}{{0,3}}+:{IPV6_AFTER_FIRST_GROUP}{IPV6_END}(?P<ip6_>)",
    r"\d\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)(?P<port>[:#]\d{1,5}(?![\w.]))?(?P<ip4>)",
    r"0x[0-9A-Fa-f][0-9A-Fa-f]*(?![\w.-])(?P<hex>)",
    rf"{HEX}{HEX}{{7}}(?:-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{4}}-{HEX}{{12}}|{HEX}*+)"
    r"(?![\w.-])(?P<long_hex>)",
    r"\d\d*+(?:[.:/]-?\d+)*+(?![\w]|[.-]\w)(?P<num>)",
    # a DNS name ends in a letters-only label, checked against file names in _mask_special
    r"[A-Za-z0-9](?<!@.)(?:[\w-]*+\.)++(?P<tld>[A-Za-z]{2,63})(?![\w.@-])(?P<host>)",
    r"/[\w.~%+@/-]*+(?P<query>\?[^\s\"'<>]*)?(?=[\s\"'),;\]>]|$)(?P<path>)",
    *severity.WORD_BRANCHES,  # severity words (facts.severity)
)
_TOKEN_SCAN = re.compile(_DELIMITERS + "(?:" + "|".join(_TOKEN_BRANCHES) + ")")
# User names that show only with the words around them (sshd, PAM, ftp, web auth). Each
# regex opens with a literal (which `re` finds fast) and runs only when its cue word is
# among the line's words.
_NOT_A_NAME = r"(?!(?:from|by|to|not|found|unknown|is|was|has|in|with|name|account)\b)"
_AFTER_FOR = re.compile(
    rf"for (?<!\wfor )(?:(?P<u_for>[A-Za-z_]{_NAME}?)(?= from\b)"
    r"|user \[(?P<u_bracket>[^\]\s]+)\]"  # pure-ftpd
    r"|'(?P<u_for_quoted>[^'\s]+)' from\b"  # dropbear
    rf"|(?<=failures for )(?P<u_failures>{_NAME}))"  # "Too many authentication failures"
)
_AFTER_USER = re.compile(  # "[Ii]nvalid user X", "User X from", "user 'X'"
    rf"ser (?:(?<=[Ii]nvalid user |[Ii]llegal user ){_NOT_A_NAME}(?P<u_invalid>{_NAME})"
    rf"|(?<=authenticating user ){_NOT_A_NAME}(?P<u_authenticating>{_NAME})"
    rf"|(?<=\b[Uu]ser ){_NOT_A_NAME}(?P<u_phrase>{_NAME})(?:\(uid=\d+\))?(?= from\b"
    r"| not (?:allowed|found)| to access|: (?:password|authentication|authorization)| by\b)"
    r"|(?<=\b[Uu]ser )['\"`](?P<u_quoted>[^'\"`\s]+)['\"])"
)
_RARER_USERS = re.compile(  # proftpd, MySQL; vsftpd "[pid 1] [X] FAIL LOGIN"
    rf"USER (?:(?P<u_proftpd>{_NAME})(?= \(Login failed\)|: no such user)|'(?P<u_caps>[^'\s]+)')"
    r"|pid \d+\] \[(?P<u_vsftpd>[^\]\s]+)\] (?:FAIL|OK) LOGIN"
)
# The regexes, with the words that call for them, in a fixed order.
_USER_PATTERNS = (
    (frozenset(("for",)), _AFTER_FOR),
    (frozenset(("user", "User")), _AFTER_USER),
    (frozenset(("USER", "FAIL", "OK")), _RARER_USERS),
)
_CUE_WORDS = frozenset().union(*(words for words, _ in _USER_PATTERNS))
_BRACKET_CLF = re.compile(rf"\[({CLF})\]")  # an access log's time, anywhere in the line
_REQUEST_STATUS = re.compile(r"(HTTP/\d(?:\.\d)?\") ([1-5]\d\d)(?!\S)")  # "GET /x HTTP/1.1" 404
_REMOTE_USER = re.compile(r"\S+ \S+ ([^\s\[\-][^\s\[]*) \[")  # host ident user [time]

# Branch name -> (entity kind or "", mask); the other branches need a check (_mask_special).
_PLAIN_BRANCHES = {"stamp": ("", "<TIME>"), "ip6": ("ip", "<IP>"), "ip6_": ("ip", "<IP>")}
_PLAIN_BRANCHES.update(dict.fromkeys(("mac", "hex", "num"), ("", "<NUM>")))
_USER_BRANCHES = frozenset(name for name in _TOKEN_SCAN.groupindex if name.startswith("u_"))


_HOST_PREFIX = re.compile(r"[A-Za-z0-9](?:[\w-]*\.)+([A-Za-z]{2,63})")
# A number, a time, or an IPv4 address with a port (":25", "#53"; "]:25" if "[" is an edge)
_SIMPLE_VALUE = re.compile(
    rf"(?P<address>{OCTET}\.{OCTET}\.{OCTET}\.{OCTET})(?P<port>(?:[:#]|\]:)\d{{1,5}})?"
    r"(?P<ip>)|\d{1,2}:\d\d:\d\d(?:[.,]\d+)?(?P<time>)|\d+(?:[.:/]\d+)*(?P<num>)"
)
_EDGES = "[]()<>{},;:*'\""
_USER_KEYS = frozenset(("user", "ruser", "logname", "sasl_username", "set_id"))


class ScannedLine(NamedTuple):
    """A line's masked text, (kind, value) entities (in line order, but user names found by
    the words around them last), timestamp as written, and severities (SEVERITIES order).
    A NamedTuple, not a frozen dataclass: one is made per line, and it is cheaper."""

    masked: str
    entities: tuple[tuple[str, str], ...]
    timestamp: str | None
    severities: tuple[str, ...] = ()


# A whitespace-separated token's masked text, entities, severities (severity.BIT bits), and
# lower-case form if it may be half of a two-word severity phrase ("invalid user").
Token = tuple[str, tuple[tuple[str, str], ...], int, str]

# Tokens seen before (words, names, paths; not varying numbers): a dict hit, not a regex
# pass. Bounded: cleared when full.
_TOKEN_CACHE: dict[str, Token] = {}
_TOKEN_CACHE_SIZE = 50_000
_NUMBER: Token = ("<NUM>", (), 0, "")
_PHRASE_WORDS = frozenset(word for phrase in severity.PHRASES for word in phrase)
_PHRASE_BITS = {phrase: severity.BIT[level] for phrase, level in severity.PHRASES.items()}


def scan_line(line: str) -> ScannedLine:
    """Find the timestamp, entities and severities of one log line; mask its variable parts."""
    end, timestamp, entities, masked_head = read_header(line)
    tokens = line[end:].split()
    masked = [masked_head] if masked_head else []
    found, previous_word, cached = 0, "", _TOKEN_CACHE.get
    for token in tokens:
        masked_token, token_entities, bits, word = cached(token) or _scan_token(token)
        masked.append(masked_token)
        if token_entities:
            entities.extend(token_entities)
        if bits:
            found |= bits
        if word:  # "invalid user", "timed out", ...
            found |= _PHRASE_BITS.get((previous_word, word), 0)
        previous_word = word
    if line[:1] in severity.LEVEL_STARTS:
        level = severity.line_level(line)
        if level is not None:
            found |= severity.BIT[level]
    if not _CUE_WORDS.isdisjoint(tokens):
        _context_users(line, end, tokens, entities)
    masked_line = " ".join(masked)
    if " HTTP/" in line:
        masked_line = _access_log(line, masked_line, entities)
    if timestamp is None and "[" in line:
        clf = _BRACKET_CLF.search(line)
        timestamp = None if clf is None else clf.group(1)
    return ScannedLine(masked_line, tuple(entities), timestamp, severity.IN_ORDER[found])


def severities(line: str) -> tuple[str, ...]:
    """The severities (in SEVERITIES order) the line carries; () if none."""
    return scan_line(line).severities


def _context_users(line: str, end: int, tokens: list[str], entities: list[tuple[str, str]]) -> None:
    cues = _CUE_WORDS.intersection(tokens)
    for words, pattern in _USER_PATTERNS:
        if not words.isdisjoint(cues):
            entities.extend(("user", m[m.lastgroup or ""]) for m in pattern.finditer(line, end))


def _access_log(line: str, masked: str, entities: list[tuple[str, str]]) -> str:
    """An access log's status ("GET /x" 404) is an entity, kept in the mask; so is its user."""
    request = _REQUEST_STATUS.search(line)
    if request is None:
        return masked
    entities.append(("status", request[2]))
    remote = _REMOTE_USER.match(line)
    if remote is not None:
        entities.append(("user", remote[1]))
    return masked.replace(f"{request[1]} <NUM>", f"{request[1]} {request[2]}", 1)


def _scan_token(token: str) -> Token:
    """Scan a token not in the token cache; remember it if it is plain."""
    simple = _NUMBER if token.isdigit() else _simple_token(token)  # ports, counts, addresses
    if simple is not None:
        return simple
    scan = _match_token(token)
    # Worth keeping unless it holds a number (an address, a port, an id) that varies.
    if not any(map(str.isdigit, token)) or (scan[0] == token and not scan[1]):
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_SIZE:
            _TOKEN_CACHE.clear()
        _TOKEN_CACHE[token] = scan
    return scan


def _match_token(token: str) -> Token:
    """Scan one token with the token regex (with a space in front, a delimiter)."""
    text, bits, last = " " + token, 0, 1
    entities: list[tuple[str, str]] = []
    pieces: list[str] = []
    for match in _TOKEN_SCAN.finditer(text):
        branch = match.lastgroup
        start = match.start() + 1  # after the delimiter
        if branch is None:  # a severity word
            bits |= severity.BIT[severity.SEVERITY_OF[text[start : match.end()].lower()]]
            continue
        if branch in _USER_BRANCHES:
            entities.append(("user", match[branch]))
            continue
        plain = _PLAIN_BRANCHES.get(branch)
        if plain is not None:
            kind, mask = plain
            if kind:
                entities.append((kind, text[start : match.end()]))
        else:
            special = _mask_special(match, branch, text, entities)
            if special is None:
                continue
            mask = special
        pieces.append(text[last:start])
        pieces.append(mask)
        last = match.end()
    pieces.append(text[last:])
    word = token.strip("\"'()[]<>{},.;:!?").lower()
    return ("".join(pieces), tuple(entities), bits, word if word in _PHRASE_WORDS else "")


def _simple_token(token: str) -> Token | None:
    """A number, time or IPv4 address (with a port) behind a key, bracket or host: "[1.2.3.4]:25",
    "rip=1.2.3.4,", "mail.example.com[1.2.3.4]", "uid=0", "[31602]", "14:34:10" (the shapes of
    most varying tokens) with a small regex, not the token regex (several times dearer)."""
    if token[-1].isdigit() and IP4_OCTETS.fullmatch(token):  # the commonest: a bare address
        return ("<IP>", (("ip", token),), 0, "")
    core = token.strip(_EDGES)
    prefix, _, value = core.rpartition("=") if "=" in core else core.rpartition("[")
    if not value[:1].isdigit():
        return None
    entities: list[tuple[str, str]] = []
    if prefix and not prefix.isalpha():
        host = _HOST_PREFIX.fullmatch(prefix)  # postfix's "host[1.2.3.4]"
        if host is None or not is_domain_tld(host.group(1)):
            return None  # a number, or something else, may hide in the prefix
        entities.append(("host", prefix))
    elif prefix in _USER_KEYS:
        return None  # "user=1234" names a user
    simple = _SIMPLE_VALUE.fullmatch(value)
    if simple is None:
        return None
    kind = simple.lastgroup
    if kind == "ip":
        entities.append(("ip", simple["address"]))
        port = simple["port"]
        mask = "<IP>" if port is None else "<IP>]:<NUM>" if port[0] == "]" else "<IP>:<NUM>"
    else:
        mask = "<TIME>" if kind == "time" else "<NUM>"
    stop = len(token) - len(token.lstrip(_EDGES)) + len(core)
    start = stop - len(value)
    if entities and entities[0][0] == "host":
        start -= len(prefix) + 1
        mask = "<HOST>[" + mask
    return (token[:start] + mask + token[stop:], tuple(entities), 0, "")


def _mask_special(
    match: re.Match[str], branch: str, text: str, entities: list[tuple[str, str]]
) -> str | None:
    """Record the entities of a match that needs a check; its mask, or None to keep the text."""
    start, end = match.start() + 1, match.end()
    if branch == "ip4":
        port = match.start("port")
        address = text[start : port if port >= 0 else end]
        if IP4_OCTETS.fullmatch(address) is None:  # 999.1.1.1
            return "<NUM>"
        entities.append(("ip", address))
        return "<IP>" if port < 0 else "<IP>:<NUM>"
    if branch == "host":
        if not is_domain_tld(match["tld"]):
            return None
        entities.append(("host", text[start:end]))
        return "<HOST>"
    if branch == "long_hex":
        # "deadbeef" is a word, "1408f10b" an id
        return None if text[start:end].isalpha() else "<NUM>"
    if branch == "path":
        query = match.start("query")
        entities.append(("path", text[start : query if query >= 0 else end]))
        return "<PATH>"
    return _mask_url(match, entities)


def _mask_url(match: re.Match[str], entities: list[tuple[str, str]]) -> str:
    entity = host_or_ip(match["uhost"])
    if entity is not None:
        entities.append(entity)
    path = match["upath"]
    if path:
        entities.append(("path", path))
    return "<URL>"
