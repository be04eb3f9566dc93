"""facts.severity on real log lines: which severity words a line carries, once per line."""

from __future__ import annotations

import pytest

from streamd.facts.entities import severities
from streamd.facts.records import SEVERITIES
from streamd.facts.severity import RULES, line_level


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from "
            "194.117.26.69 port 50273 ssh2",
            ("failure", "denied"),
        ),
        (
            "Jun 21 16:47:48 digital-mlhhyiqscv sshd[13709]: error: PAM: Authentication "
            "failure for myhlj1374 from 192.030.0.6",
            ("error", "failure"),
        ),
        (
            "Nov 24 23:46:43 host sshd[32686]: fatal: Read from socket failed: Connection "
            "reset by peer [preauth]",
            ("critical", "failure"),
        ),
        (
            "Mar 10 13:33:30 gandalf postfix/smtpd[3937]: warning: HOSTNAME[1.1.1.1]: SASL "
            "LOGIN authentication failed: authentication failure",
            ("warning", "failure"),
        ),
        (
            "Jul 12 07:47:48 saturn postfix/smtpd[8738]: NOQUEUE: reject: RCPT from "
            "1-2-3-4-example.com[1.2.3.4]: 554 5.7.1 <smtp@example.com>: Relay access denied",
            ("denied",),
        ),
        (
            "Apr 24 01:39:19 host sshd[3719]: User root not allowed because account is locked",
            ("denied",),
        ),
        (
            "[Sat Jun 01 02:17:42 2013] [error] [client 192.168.0.2] user root not found",
            ("error",),
        ),
        (
            "2020/11/25 14:42:16 [crit] 76952#76952: *2454307 SSL_do_handshake() failed",
            ("critical", "failure"),
        ),
        (
            "2020/11/25 16:02:45 [error] 76952#76952: *5645766 connect() failed (111: "
            "Connection refused) while connecting to upstream",
            ("error", "failure"),
        ),
        (
            "Jun  6 04:17:04 host sshd[1189074]: Invalid user  from 192.0.2.68 port 34916",
            ("denied",),
        ),
        ("2024-01-02 03:04:05,123 ERROR db: connection timed out", ("error", "failure")),
        ('ts=2024-01-02T03:04:05Z level=warn msg="disk 91% full"', ("warning",)),
        ("Connection closed by 192.0.2.5", ()),
        # whole words only: no "error" in "terror", no "fail" in "auth_failed" or "Warner"
        ("terror on the dancefloor: auth_failed by Warner", ()),
        # once per line
        ("error error ERROR Error: errors", ("error",)),
    ],
)
def test_severities_of_real_lines(line: str, expected: tuple[str, ...]) -> None:
    assert severities(line) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<3>kernel: oops", "error"),
        ("<12>Jan  5 01:31:41 www app: disk slow", "warning"),  # user.warning: 12 % 8 = 4
        ("<38>1 2019-07-08T17:40:16.954167-04:00 host sshd 57915 - - Accepted", None),
        ("E0102 03:04:05.678901 1234 server.cc:42] RPC failed", "error"),
        ("W/ActivityManager(  123): Slow operation", "warning"),
        ("01-02 03:04:05.678  1234  5678 F libc    : Fatal signal 11", "critical"),
        ("Every line starts somewhere", None),
    ],
)
def test_level_fields_count_as_their_word(line: str, expected: str | None) -> None:
    assert line_level(line) == expected
    if expected is not None:
        assert expected in severities(line)


def test_the_rules_cover_every_severity_and_no_word_twice() -> None:
    assert tuple(RULES) == SEVERITIES
    words = [word for group in RULES.values() for word in group]
    assert len(words) == len(set(words))
    assert all(word == word.lower() for word in words)
