"""Claim extraction and checking against real fail2ban sample lines and mined facts."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from streamd.facts.claims import (
    Claim,
    Evidence,
    check_summary,
    extract_claims,
    normalize,
)
from streamd.facts.records import Counted, LineFacts, SummaryFacts, TemplateCount

SAMPLE = resources.files("streamd.daemon.data").joinpath("fail2ban-sample.log").read_text()
LINES = SAMPLE.splitlines()
# Feb 25 belka sshd lines, Jan 5 root refusals, Jul 20 invalid user ftp
WINDOW = "\n".join(LINES[3:12])

FAILED = "Failed password for invalid user <*> from <*> port <*> ssh2"
REFUSED = "ROOT LOGIN REFUSED FROM <*>"


def _facts() -> SummaryFacts:
    span = LineFacts(
        profile="logs",
        lines=9,
        templates=(
            TemplateCount(FAILED, 12, LINES[3], new=True),
            TemplateCount(REFUSED, 3, LINES[8], new=False),
        ),
        severity={"failure": 0, "error": 2},
        entities={"ip": (Counted("194.117.26.69", 2),), "user": (Counted("ROOT", 5),)},
        first_time="Jan  5 01:31:41",
        last_time="Jul 20 14:42:11",
    )
    return SummaryFacts(since_last=span, window=span, templates_total=17, templates_evicted=0)


def kinds_and_texts(text: str) -> list[tuple[str, str]]:
    return [(c.kind, c.text) for c in extract_claims(text)]


# --- extraction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The system logged several failures.",
        "Most attempts came from the same place, for example the second one.",
        "The connection was reset by peer after the first try.",
        "User accounts were locked and users could not log in.",
        "The operator didn't say what the users' problem was... it's unclear.",
        "Twenty-three failed logins were recorded this morning.",
    ],
)
def test_ordinary_prose_holds_no_claims(text: str) -> None:
    assert extract_claims(text) == []


def test_each_kind_is_recognised() -> None:
    text = (
        "Invalid user admin from 192.0.2.117 port 44004 on Feb 25, 2024 at 14:34:10. "
        "Errors in /var/log/auth.log and auth.log on mail.example.com mention "
        '"Connection closed" (3.5%, 1,234 lines). Users root, test and git logged in as '
        "ec2-user at 9:30 pm on 2024-01-02; IPv6 2606:2800:220:1:248:1893:25c8:1946."
    )
    assert kinds_and_texts(text) == [
        ("user", "admin"),
        ("ip", "192.0.2.117"),
        ("number", "44004"),
        ("date", "Feb 25, 2024"),
        ("time", "14:34:10"),
        ("path", "/var/log/auth.log"),
        ("path", "auth.log"),
        ("host", "mail.example.com"),
        ("quoted", "Connection closed"),
        ("number", "3.5%"),
        ("number", "1,234"),
        ("user", "root"),
        ("user", "test"),
        ("user", "git"),
        ("user", "ec2-user"),
        ("time", "9:30 pm"),
        ("date", "2024-01-02"),
        ("ip", "2606:2800:220:1:248:1893:25c8:1946"),
    ]


def test_numbers_inside_other_claims_are_not_numbers() -> None:
    text = (
        "On Jul 20 at 14:42:11 host 1234.bbbbbb.com and s166-62.example.net saw 192.0.2.2, "
        "TLSv1.2 and ssh2 on the third try."
    )
    assert [c.kind for c in extract_claims(text)] == ["date", "time", "host", "host", "ip"]


def test_list_markers_are_not_numbers_and_sentences_are_indexed() -> None:
    text = "Events:\n1. 12 failed logins.\n2. Root refused from 1.2.3.4."
    assert extract_claims(text) == [
        Claim("number", "12", 1),
        Claim("ip", "1.2.3.4", 2),
    ]


def test_apostrophes_do_not_open_quotes() -> None:
    text = "The server didn't accept 'root' and the users' logins weren't logged."
    assert kinds_and_texts(text) == [("quoted", "root")]


def test_user_names_need_a_name_like_word() -> None:
    assert kinds_and_texts("Failed password for invalid user ROOT and for root.") == [
        ("user", "ROOT"),
        ("user", "root"),
    ]
    assert kinds_and_texts("Closed by web-01, by authenticating user test.") == [
        ("user", "web-01"),
        ("user", "test"),
    ]
    assert kinds_and_texts("Mail for user1@example.com bounced.") == [("user", "user1@example.com")]


@pytest.mark.parametrize(
    ("kind", "written", "norm"),
    [
        ("ip", "::ffff:1.2.3.4", "1.2.3.4"),
        ("ip", "aaaa:bbbb:cccc:1234:0:0:1:1", "aaaa:bbbb:cccc:1234::1:1"),
        ("ip", "2606:2800:0220:0001:0248:1893:25C8:1946", "2606:2800:220:1:248:1893:25c8:1946"),
        ("ip", "192.030.0.6", "192.30.0.6"),
        ("number", "1,234", "1234"),
        ("number", "3.50", "3.5"),
        ("number", "50 %", "50%"),
        ("date", "February 25th", "--02-25"),
        ("date", "25/Feb/2024", "2024-02-25"),
        ("date", "4 December 2023", "2023-12-04"),
        ("time", "9am", "09"),
        ("time", "12:05 a.m.", "00:05"),
        ("time", "14:34:10.954", "14:34:10"),
        ("host", "Mail.Example.COM", "mail.example.com"),
        ("quoted", "  Connection   closed. ", "connection closed"),
    ],
)
def test_normalized_forms(kind: str, written: str, norm: str) -> None:
    assert normalize(kind, written) == norm


# --- evidence -----------------------------------------------------------------


def test_a_summary_with_an_invented_ip_loses_the_sentence() -> None:
    summary = (
        "Multiple failed login attempts for root from 194.117.26.69 were recorded. "
        "The server at 10.0.0.7 crashed at 9am."
    )
    checked = check_summary(summary, Evidence(WINDOW, _facts()), "drop-sentence")
    assert (
        checked.text == "Multiple failed login attempts for root from 194.117.26.69 were recorded."
    )
    v = checked.verification
    assert [(u.kind, u.text) for u in v.unsupported] == [("ip", "10.0.0.7"), ("time", "9am")]
    assert v.removed_sentences == ("The server at 10.0.0.7 crashed at 9am.",)
    assert (v.checked, v.supported, v.precision) == (4, 2, 0.5)
    assert (v.checked_after, v.supported_after, v.precision_after) == (2, 2, 1.0)


def test_ips_are_token_bounded() -> None:
    evidence = Evidence("Jan 29 14:38:51 host sshd[1]: Connection from 10.0.0.12 port 22")
    assert not evidence.supports(Claim("ip", "10.0.0.1", 0))
    assert evidence.supports(Claim("ip", "10.0.0.12", 0))
    assert evidence.supports(Claim("number", "22", 0))
    assert not evidence.supports(Claim("number", "2", 0))


def test_ipv6_forms_compare_equal() -> None:
    evidence = Evidence(WINDOW)
    # the window writes aaaa:bbbb:cccc:1234::1:1 and ::ffff:1.2.3.4
    assert evidence.supports(Claim("ip", "AAAA:BBBB:CCCC:1234:0:0:1:1", 0))
    assert evidence.supports(Claim("ip", "aaaa:bbbb:cccc:1234:0000:0000:0001:0001", 0))
    assert evidence.supports(Claim("ip", "::ffff:1.2.3.4", 0))
    assert evidence.supports(Claim("ip", "0:0:0:0:0:ffff:102:304", 0))
    assert not evidence.supports(Claim("ip", "aaaa:bbbb:cccc:1234::1:2", 0))


def test_a_number_in_the_facts_counts_as_supported() -> None:
    evidence = Evidence(WINDOW, _facts())
    summary = (
        "There were 12 failed password attempts for invalid user ROOT. "
        "17 templates are alive. 13 logins were refused."
    )
    checked = check_summary(summary, evidence, "drop-sentence")
    assert checked.text == (
        "There were 12 failed password attempts for invalid user ROOT. 17 templates are alive."
    )
    assert [u.text for u in checked.verification.unsupported] == ["13"]


def test_numbers_match_with_thousands_separators() -> None:
    evidence = Evidence("May 19 00:00:30 proxy2 postfix/smtpd[16123]: 1234 messages queued")
    assert evidence.supports(Claim("number", "1,234", 0))
    assert Evidence("queue holds 1,234 messages").supports(Claim("number", "1234", 0))
    assert not evidence.supports(Claim("number", "1,235", 0))


def test_dates_and_times_are_supported_at_the_precision_written() -> None:
    evidence = Evidence(WINDOW, _facts())
    assert evidence.supports(Claim("date", "Feb 25", 0))
    assert evidence.supports(Claim("date", "February 25th", 0))
    assert evidence.supports(Claim("date", "Jan 5", 0))
    assert not evidence.supports(Claim("date", "Feb 25, 2024", 0))  # no year in the lines
    assert not evidence.supports(Claim("date", "Feb 26", 0))
    assert evidence.supports(Claim("time", "14:34", 0))
    assert evidence.supports(Claim("time", "2pm", 0))  # 14:34:10, 14:42:11
    assert evidence.supports(Claim("time", "1am", 0))  # 01:31:41
    assert not evidence.supports(Claim("time", "9am", 0))
    assert not evidence.supports(Claim("time", "14:35", 0))


def test_dates_come_from_the_facts_too() -> None:
    span = LineFacts(profile="logs", lines=1, first_time="2024-01-02T09:30:00")
    evidence = Evidence("", SummaryFacts(span, span, templates_total=1, templates_evicted=0))
    assert evidence.supports(Claim("date", "2024-01-02", 0))
    assert evidence.supports(Claim("date", "Jan 2", 0))
    assert evidence.supports(Claim("time", "9:30 am", 0))


def test_quotes_users_hosts_and_paths_are_looked_up_in_the_text() -> None:
    window = "\n".join(LINES)
    evidence = Evidence(window)
    assert evidence.supports(Claim("quoted", "failed  PASSWORD for invalid user", 0))
    assert evidence.supports(Claim("user", "stefanor", 0))
    assert evidence.supports(Claim("host", "example.com", 0))
    assert evidence.supports(Claim("path", "/var/www", 0))
    assert not evidence.supports(Claim("user", "stefan", 0))  # inside "stefanor" only
    assert not evidence.supports(Claim("host", "evil.example.org", 0))
    assert not evidence.supports(Claim("path", "/etc/shadow", 0))


def test_quotes_are_supported_by_templates_of_the_facts() -> None:
    evidence = Evidence("", _facts())
    assert evidence.supports(Claim("quoted", "ROOT LOGIN REFUSED FROM <*>", 0))
    assert evidence.supports(Claim("user", "root", 0))  # an entity value
    assert not evidence.supports(Claim("quoted", "Accepted password", 0))


def test_flag_keeps_the_text_and_lists_what_is_unsupported() -> None:
    summary = "Invalid user ftp from 192.0.2.1. Invalid user bob from 192.0.2.99."
    checked = check_summary(summary, Evidence(WINDOW), "flag")
    assert checked.text == summary
    v = checked.verification
    assert [(u.kind, u.text, u.sentence) for u in v.unsupported] == [
        ("user", "bob", "Invalid user bob from 192.0.2.99."),
        ("ip", "192.0.2.99", "Invalid user bob from 192.0.2.99."),
    ]
    assert v.removed_sentences == ()
    assert (v.checked, v.supported, v.checked_after, v.supported_after) == (4, 2, 4, 2)


def test_dropping_a_list_item_keeps_the_other_lines() -> None:
    summary = (
        "- Failed password for invalid user ROOT from 194.117.26.69\n"
        "- 5 attempts came from 1.2.3.5\n"
        "- Invalid user ftp from 192.0.2.1"
    )
    checked = check_summary(summary, Evidence(WINDOW), "drop-sentence")
    assert checked.text == (
        "- Failed password for invalid user ROOT from 194.117.26.69\n"
        "- Invalid user ftp from 192.0.2.1"
    )


def test_a_fully_supported_summary_is_unchanged() -> None:
    summary = (
        "On Feb 25 at 14:34, sshd on belka rejected invalid user ROOT from 194.117.26.69 "
        "on port 50273. Root logins from ::ffff:1.2.3.4 were refused."
    )
    checked = check_summary(summary, Evidence(WINDOW), "drop-sentence")
    assert checked.text == summary
    assert checked.verification.precision == 1.0
    assert checked.verification.checked == 6  # date, time, user, ip, number, ip


def test_verification_as_dict_is_json() -> None:
    checked = check_summary("Root came from 10.9.9.9.", Evidence(WINDOW), "drop-sentence")
    data = json.loads(json.dumps(checked.verification.as_dict()))
    assert data["policy"] == "drop-sentence"
    assert data["unsupported"] == [
        {"kind": "ip", "text": "10.9.9.9", "sentence": "Root came from 10.9.9.9."}
    ]
    assert (data["precision"], data["precision_after"]) == (0.0, 1.0)
    assert checked.text == ""


def test_nothing_checked_means_precision_one() -> None:
    v = check_summary("The system logged several failures.", Evidence(WINDOW)).verification
    assert (v.checked, v.precision, v.precision_after) == (0, 1.0, 1.0)


def test_unknown_policy_is_refused() -> None:
    policy: Any = "drop"  # what a bad config would pass
    with pytest.raises(ValueError, match="policy"):
        check_summary("x", Evidence(""), policy)
