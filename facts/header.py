"""A log line's header: its leading timestamp and, in syslog and similar formats, the host
and program fields (facts.entities reads the rest of the line)."""

from __future__ import annotations

import re

from . import severity
from .addresses import host_or_ip

# --- leading timestamp and syslog header -------------------------------------------------------

MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
HMS = r"\d{1,2}:\d\d:\d\d(?:[.,]\d+)?"
_ISO_DATE_TIME = rf"\d{{4}}-\d\d-\d\d(?:T| +){HMS}(?:Z|[+-]\d\d:?\d\d)?"
CLF = rf"\d\d/{MONTH}/\d{{4}}:\d\d:\d\d:\d\d(?:\.\d+)?(?: [+-]\d{{4}})?"
_CTIME = rf"{_WEEKDAY} {MONTH} +\d{{1,2}} {HMS} \d{{4}}"
_LEADING_TIME = (
    rf"{MONTH} +\d{{1,2}} {HMS}"  # syslog: "Feb 25 14:34:10", "Jan  5 01:31:41"
    rf"|{_ISO_DATE_TIME}"  # ISO 8601, Python logging: "2024-01-02 03:04:05,123"
    rf"|\d{{4}}/\d\d/\d\d {HMS}"  # nginx error log
    rf"|\d\d-{MONTH}-\d{{4}} {HMS}"  # BIND
    rf"|\d{{6}} +(?:\d{{6}}|{HMS})"  # HDFS "081109 203615", MySQL "130324  0:04:00"
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
    rf"(?P<lead>(?:<\d{{1,3}}>)?(?:(?P<ts>{_LEADING_TIME})|\[(?P<bts>{_CTIME}|{CLF}|{_ISO_DATE_TIME})\]"
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


def read_header(line: str) -> tuple[int, str | None, list[tuple[str, str]], str]:
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
        entity = host_or_ip(host)
        if entity is not None:
            entities.append(entity)
    if program == "-":
        return end, timestamp, entities, ""
    entities.append(("program", program))
    return end, timestamp, entities, program + ":"
