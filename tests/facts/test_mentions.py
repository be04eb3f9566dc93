"""The template-mention rule behind the top-template recall metric."""

from __future__ import annotations

import pytest

from streamd.facts.mentions import (
    content_stems,
    mention_counts,
    stem,
    template_mentioned,
    top_template_recall,
)

FAILED = "Failed password for <*> from <IP> port <NUM> ssh2"
INVALID = "Invalid user <*> from <IP>"
CLOSED = "Connection closed by <IP> [preauth]"
PAM = "pam_unix(sshd:auth): authentication failure; logname= uid=<NUM> euid=<NUM> rhost=<IP>"


@pytest.mark.parametrize(
    "words", [("failed", "failure", "fails"), ("refused", "refuse"), ("users", "user")]
)
def test_the_stem_joins_word_forms(words: tuple[str, ...]) -> None:
    assert len({stem(w) for w in words}) == 1


def test_content_words_skip_placeholders_and_stopwords() -> None:
    assert content_stems(FAILED) == {"fail", "passw", "port", "ssh"}
    assert content_stems(INVALID) == {"inval", "user"}
    assert content_stems("<*> <IP> from <*>") == frozenset()


def test_half_the_content_words_are_needed() -> None:
    assert template_mentioned(FAILED, "There were many failed password attempts from 1.2.3.4.")
    # "failed" alone is 1 of 4: a different failure may be meant
    assert not template_mentioned(FAILED, "Multiple failed login attempts for root were seen.")
    assert template_mentioned(FAILED, "Logins failed on port 22.")


def test_two_content_words_need_both() -> None:
    assert template_mentioned(INVALID, "Invalid users ftp and admin tried to log in.")
    assert not template_mentioned(INVALID, "The user root logged in.")


def test_word_forms_count_as_the_same_word() -> None:
    assert template_mentioned(CLOSED, "Several connections were closed before auth.")


def test_noisy_key_value_templates_are_hard_to_mention() -> None:
    # 10 content stems (pam unix sshd auth authe fail logna uid euid rhost): 5 are needed
    assert len(content_stems(PAM)) == 10
    assert not template_mentioned(PAM, "PAM reported authentication failures for root.")
    assert template_mentioned(PAM, "pam_unix logged authentication failures for sshd (uid 0).")


def test_a_placeholder_only_template_is_never_mentioned() -> None:
    assert not template_mentioned("<*> <IP>", "1.2.3.4 connected")


def test_top_template_recall() -> None:
    summary = "Failed password attempts from 194.117.26.69; invalid user ftp from 192.0.2.1."
    assert mention_counts([FAILED, INVALID, CLOSED], summary) == (2, 3)
    assert top_template_recall([FAILED, INVALID, CLOSED], summary) == pytest.approx(2 / 3)


def test_unmentionable_templates_leave_the_denominator() -> None:
    assert mention_counts([FAILED, "<*> <*>"], "Failed password for root.") == (1, 1)
    assert mention_counts(["<*> <*>"], "anything") == (0, 0)
    assert top_template_recall(["<*> <*>"], "anything") == 1.0
    assert top_template_recall([], "anything") == 1.0
