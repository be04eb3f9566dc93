"""One pass over a log line: its leading timestamp, its entities (ENTITY_KINDS), severities
and a masked copy for template mining (variable parts replaced by <IP>, <NUM>, <TIME>, <HOST>,
<PATH>, <URL>; the leading timestamp, syslog host and pid dropped).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from . import severity

# --- leading timestamp and syslog header -------------------------------------------------------

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_HMS = r"\d{1,2}:\d\d:\d\d(?:[.,]\d+)?"
_ISO_DATE_TIME = rf"\d{{4}}-\d\d-\d\d(?:T| +){_HMS}(?:Z|[+-]\d\d:?\d\d)?"
_CLF = rf"\d\d/{_MONTH}/\d{{4}}:\d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{{4}})?"
_CTIME = rf"{_WEEKDAY} {_MONTH} +\d{{1,2}} {_HMS} \d{{4}}"
_LEADING_TIME = (
    rf"{_MONTH} +\d{{1,2}} {_HMS}"  # syslog: "Feb 25 14:34:10", "Jan  5 01:31:41"
    rf"|{_ISO_DATE_TIME}"  # ISO 8601, Python logging: "2024-01-02 03:04:05,123"
    rf"|\d{{4}}/\d\d/\d\d {_HMS}"  # nginx error log
    rf"|\d\d-{_MONTH}-\d{{4}} {_HMS}"  # BIND
    rf"|\d{{6}} +(?:\d{{6}}|{_HMS})"  # HDFS "081109 203615", MySQL "130324  0:04:00"
    rf"|{_CTIME}"  # vsftpd
)
_HOSTNAME = r"(?:[\w][\w.-]*+|[0-9A-Fa-f]*:[0-9A-Fa-f:.]+(?= ))"
_PROGRAM = r"[A-Za-z_][\w.@/-]*+"
# "prog[pid]:", "prog(x)[pid]:", "prog:", "prog[pid] " and "[prog]:"; (x) is e.g. dovecot's
# "auth-worker(304)" or "pop(pam_unix)". A Solaris "[ID 800047 auth.info]" tag goes with it.
_PROGRAM_FIELD = (
    rf"(?:(?P<prog>{_PROGRAM})(?:\([^()\s]*\))?(?:\[\d+\]:?(?= )|:(?= |$))"
    rf"|(?<=\d )\[(?P<bprog>{_PROGRAM})\]:?(?= ))"
    r"(?: \[ID \d+ [\w.]+\])?"
)
_HEADER = re.compile(
    rf"(?P<lead>(?:<\d{{1,3}}>)?(?:(?P<ts>{_LEADING_TIME})|\[(?P<bts>{_CTIME}|{_CLF}|{_ISO_DATE_TIME})\]"
    rf"|(?P<tai>@[0-9a-f]{{24}})))(?: +(?:(?P<host>{_HOSTNAME}) +)?{_PROGRAM_FIELD})?"
)
# Without a timestamp, only "host prog[pid]:" is taken as a header.
_PID_HEADER = re.compile(
    rf"(?:(?P<host>{_HOSTNAME}) +)?(?P<prog>{_PROGRAM})(?:\([^()\s]*\))?\[\d+\]:?(?= )"
)
_RFC5424_HEADER = re.compile(
    rf"<\d{{1,3}}>1 (?P<ts>{_ISO_DATE_TIME}) (?P<host>\S+) (?P<prog>\S+) \S+ \S+"
    r"(?: -|(?: ?\[(?:[^\]\"]|\"(?:[^\"\\]|\\.)*\")*\])+)?"
)

# --- entities and masks, token by token -------------------------------------------------------

_HEX = r"[0-9A-Fa-f]"
_H16 = r"[0-9A-Fa-f]{1,4}"
_IPV4 = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"
# After an IPv6 address: no more hex groups (MAC-ish junk), but a ":port" may follow.
_IPV6_END = rf"(?![\w.]|::|:{_H16}(?![0-9A-Fa-f]))"
# IPv6 split by its first character, so that each branch starts with a character set (below).
_IPV6_AFTER_COLON = (
    rf"(?::(?:ffff:(?:0{{1,4}}:)?)?{_IPV4}"  # ::ffff:1.2.3.4
    rf"|(?::{_H16}){{1,7}}"  # ::1, ::ffff:a:b
    r"|:(?![\w:]))"  # ::
)
_IPV6_AFTER_FIRST_GROUP = (  # after "2001:"
    rf"(?:(?:{_H16}:){{0,3}}:?(?:ffff:)?{_IPV4}"  # 64:ff9b::1.2.3.4
    rf"|{_H16}(?::{_H16}){{6}}"  # all eight groups
    rf"|(?:{_H16}:){{0,5}}(?::{_H16}){{1,6}}"  # one "::" inside
    rf"|(?:{_H16}:){{0,6}}:)"  # trailing "::"
)
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
    rf"\d(?:\d/{_MONTH}/\d{{4}}:\d\d:\d\d:\d\d(?:\.\d+)?(?=\]|$)"
    rf"|\d{{3}}-\d\d-\d\d(?:T{_HMS}(?:Z|[+-]\d\d:?\d\d)?)?(?![\w.-])|\d?:\d\d:\d\d(?:[.,]\d+)?(?![\w:]))"
    r"(?P<stamp>)",
    rf"{_HEX}{_HEX}:(?:{_HEX}{{2}}:){{4,}}{_HEX}{{2}}(?![\w:])(?P<mac>)",
    rf":{_IPV6_AFTER_COLON}{_IPV6_END}(?P<ip6>)",
    rf"{_HEX}{_HEX}{{0,3}}+:{_IPV6_AFTER_FIRST_GROUP}{_IPV6_END}(?P<ip6_>)",
    r"\d\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)(?P<port>[:#]\d{1,5}(?![\w.]))?(?P<ip4>)",
    r"0x[0-9A-Fa-f][0-9A-Fa-f]*(?![\w.-])(?P<hex>)",
    rf"{_HEX}{_HEX}{{7}}(?:-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}|{_HEX}*+)"
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
_BRACKET_CLF = re.compile(rf"\[({_CLF})\]")  # an access log's time, anywhere in the line
_REQUEST_STATUS = re.compile(r"(HTTP/\d(?:\.\d)?\") ([1-5]\d\d)(?!\S)")  # "GET /x HTTP/1.1" 404
_REMOTE_USER = re.compile(r"\S+ \S+ ([^\s\[\-][^\s\[]*) \[")  # host ident user [time]

# Branch name -> (entity kind or "", mask); the other branches need a check (_mask_special).
_PLAIN_BRANCHES = {"stamp": ("", "<TIME>"), "ip6": ("ip", "<IP>"), "ip6_": ("ip", "<IP>")}
_PLAIN_BRANCHES.update(dict.fromkeys(("mac", "hex", "num"), ("", "<NUM>")))
_USER_BRANCHES = frozenset(name for name in _TOKEN_SCAN.groupindex if name.startswith("u_"))


# File name endings that look like a top-level domain; "app.log" is not a host.
_FILE_ENDINGS_TEXT = """
    log txt conf cfg ini json xml yml yaml toml csv tsv php html htm shtml xhtml js mjs css py
    pyc sh bash pl pm rb go rs java class jar war cpp hpp hh cc so dll exe bin gz tgz bz2 xz zip
    tar rar deb rpm pid sock lock tmp bak old orig swp db sqlite sql md rst pdf doc docx xls xlsx
    png jpg jpeg gif svg ico webp mp3 mp4 asp aspx jsp cgi htaccess htpasswd pem crt key csr
    service socket timer mount target slice scope err out env ts tsx vue map wasm iso img whl
    egg po mo inc tpl bat cmd ps ps1 tf lua erl ex exs kt swift scala dat idx tmpl
"""
_FILE_ENDINGS = frozenset(_FILE_ENDINGS_TEXT.split())
_IP6_FULL = re.compile(rf"(?::{_IPV6_AFTER_COLON}|{_H16}:{_IPV6_AFTER_FIRST_GROUP})")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|0?\d?\d)"  # "030" too: fail2ban's tests have one
_IP4_OCTETS = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}")
_HOST_PREFIX = re.compile(r"[A-Za-z0-9](?:[\w-]*\.)+([A-Za-z]{2,63})")
# A number, a time, or an IPv4 address with a port (":25", "#53"; "]:25" if "[" is an edge)
_SIMPLE_VALUE = re.compile(
    rf"(?P<address>{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET})(?P<port>(?:[:#]|\]:)\d{{1,5}})?"
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
_Token = tuple[str, tuple[tuple[str, str], ...], int, str]

# Tokens seen before (words, names, paths; not varying numbers): a dict hit, not a regex
# pass. Bounded: cleared when full.
_TOKEN_CACHE: dict[str, _Token] = {}
_TOKEN_CACHE_SIZE = 50_000
_NUMBER: _Token = ("<NUM>", (), 0, "")
_PHRASE_WORDS = frozenset(word for phrase in severity.PHRASES for word in phrase)
_PHRASE_BITS = {phrase: severity.BIT[level] for phrase, level in severity.PHRASES.items()}


def scan_line(line: str) -> ScannedLine:
    """Find the timestamp, entities and severities of one log line; mask its variable parts."""
    end, timestamp, entities, masked_head = _header(line)
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


def _scan_token(token: str) -> _Token:
    """Scan one token (with a space in front, a delimiter); remember it if it is plain."""
    simple = _NUMBER if token.isdigit() else _simple_token(token)  # ports, counts, addresses
    if simple is not None:
        return simple
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
    masked = "".join(pieces)
    word = token.strip("\"'()[]<>{},.;:!?").lower()
    info = (masked, tuple(entities), bits, word if word in _PHRASE_WORDS else "")
    # Worth keeping unless it holds a number (an address, a port, an id) that varies.
    if not any(map(str.isdigit, token)) or (masked == token and not entities):
        if len(_TOKEN_CACHE) >= _TOKEN_CACHE_SIZE:
            _TOKEN_CACHE.clear()
        _TOKEN_CACHE[token] = info
    return info


def _simple_token(token: str) -> _Token | None:
    """A number, time or IPv4 address (with a port) behind a key, bracket or host: "[1.2.3.4]:25",
    "rip=1.2.3.4,", "mail.example.com[1.2.3.4]", "uid=0", "[31602]", "14:34:10" (the shapes of
    most varying tokens) with a small regex, not the token regex (several times dearer)."""
    if token[-1].isdigit() and _IP4_OCTETS.fullmatch(token):  # the commonest: a bare address
        return ("<IP>", (("ip", token),), 0, "")
    core = token.strip(_EDGES)
    prefix, _, value = core.rpartition("=") if "=" in core else core.rpartition("[")
    if not value[:1].isdigit():
        return None
    entities: list[tuple[str, str]] = []
    if prefix and not prefix.isalpha():
        host = _HOST_PREFIX.fullmatch(prefix)  # postfix's "host[1.2.3.4]"
        if host is None or not _is_domain_tld(host.group(1)):
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


def _header(line: str) -> tuple[int, str | None, list[tuple[str, str]], str]:
    """(end of the header, timestamp, header entities, masked header) of a line."""
    if line[:1] == "<":
        head = _RFC5424_HEADER.match(line)
        if head is not None:
            return _with_program(head.end(), head["ts"], head["host"], head["prog"])
    head = _HEADER.match(line)
    if head is not None:
        timestamp = head["ts"] or head["bts"] or head["tai"]
        program, host = head["prog"] or head["bprog"], head["host"]
        levels = severity.LEVEL_WORDS  # "ERROR db:" is no host and program
        if program is None or program.lower() in levels or (host or "").lower() in levels:
            return head.end("lead"), timestamp, [], ""
        return _with_program(head.end(), timestamp, host, program)
    head = _PID_HEADER.match(line) if "[" in line else None
    if head is not None and head["prog"].lower() not in severity.LEVEL_WORDS:
        return _with_program(head.end(), None, head["host"], head["prog"])
    return 0, None, [], ""


def _with_program(
    end: int, timestamp: str | None, host: str | None, program: str
) -> tuple[int, str | None, list[tuple[str, str]], str]:
    entities = []
    if host and host != "-":  # "-": RFC 5424's nil value
        entity = _host_or_ip(host)
        if entity is not None:
            entities.append(entity)
    if program == "-":
        return end, timestamp, entities, ""
    entities.append(("program", program))
    return end, timestamp, entities, program + ":"


def _mask_special(
    match: re.Match[str], branch: str, text: str, entities: list[tuple[str, str]]
) -> str | None:
    """Record the entities of a match that needs a check; its mask, or None to keep the text."""
    start, end = match.start() + 1, match.end()
    if branch == "ip4":
        port = match.start("port")
        address = text[start : port if port >= 0 else end]
        if _IP4_OCTETS.fullmatch(address) is None:  # 999.1.1.1
            return "<NUM>"
        entities.append(("ip", address))
        return "<IP>" if port < 0 else "<IP>:<NUM>"
    if branch == "host":
        if not _is_domain_tld(match["tld"]):
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


def _is_domain_tld(tld: str) -> bool:
    # "JSchException" in com.jcraft.jsch.JSchException is a class, not a TLD
    return (tld.islower() or tld.isupper()) and tld.lower() not in _FILE_ENDINGS


def _host_or_ip(name: str) -> tuple[str, str] | None:
    """The entity a bare name (URL host, syslog host field) stands for, if any."""
    if name[0].isalpha() and ":" not in name:
        return ("host", name)
    bare = name.strip("[]")
    if bare[0].isdigit() and "." in bare and ":" not in bare:
        return ("ip", bare) if _IP4_OCTETS.fullmatch(bare) else None
    if ":" in bare:
        return ("ip", bare) if _IP6_FULL.fullmatch(bare) else None
    return ("host", name)


def _mask_url(match: re.Match[str], entities: list[tuple[str, str]]) -> str:
    entity = _host_or_ip(match["uhost"])
    if entity is not None:
        entities.append(entity)
    path = match["upath"]
    if path:
        entities.append(("path", path))
    return "<URL>"
