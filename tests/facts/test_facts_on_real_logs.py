"""The facts tracker on real logs (fail2ban's sshd test data, bundled with streamd):
templates a person would make, exact counts, new flags, bounded memory."""

from __future__ import annotations

from streamd.daemon.tools.demo import sample_lines
from streamd.facts.tracker import FactsTracker

SSHD = [line for line in sample_lines() if " sshd[" in line]


def _template_of(tracker: FactsTracker, line: str) -> str:
    facts = tracker.window_facts([line])
    (only,) = facts.templates
    return only.template


def test_the_sshd_lines_group_as_a_person_would() -> None:
    tracker = FactsTracker(profile="logs")
    tracker.observe(SSHD)
    refused = [line for line in SSHD if "ROOT LOGIN REFUSED FROM" in line and "port" not in line]
    invalid_root = [
        line
        for line in SSHD
        if "Failed password for invalid user ROOT from" in line and line.endswith(("12345", "1"))
    ]
    assert len(refused) >= 2 and len(invalid_root) >= 2
    # the same event with other addresses is one template, with the address masked
    assert len({_template_of(tracker, line) for line in refused}) == 1
    assert _template_of(tracker, refused[0]) == "sshd: ROOT LOGIN REFUSED FROM <IP>"
    # ... and different events are different templates
    locked = next(line for line in SSHD if "not allowed because account is locked" in line)
    assert _template_of(tracker, locked) != _template_of(tracker, refused[0])
    pam = [
        line
        for line in SSHD
        if "error: PAM: Authentication failure for" in line and "via" not in line
    ]
    assert len(pam) >= 2 and len({_template_of(tracker, line) for line in pam}) == 1


def test_counts_are_exact_and_new_templates_are_flagged() -> None:
    tracker = FactsTracker(profile="logs")
    first, second = SSHD[:30], SSHD[30:60] + SSHD[:5]
    tracker.observe(first)
    facts = tracker.period_facts()
    assert facts.lines == 30 and sum(t.count for t in facts.templates) == 30
    assert all(t.new for t in facts.templates)  # everything is new at the start
    counts = [t.count for t in facts.templates]
    assert counts == sorted(counts, reverse=True)
    tracker.close_period()
    tracker.observe(second)
    later = tracker.period_facts()
    assert later.lines == 35 and sum(t.count for t in later.templates) == 35
    seen_before = {t.template for t in facts.templates}
    assert any(not t.new for t in later.templates)  # the first 5 lines came back
    assert all(t.template not in seen_before for t in later.templates if t.new)
    window = tracker.window_facts(second)
    assert window.lines == 35 and sum(t.count for t in window.templates) == 35


def test_entities_severity_and_time_span_of_real_lines() -> None:
    tracker = FactsTracker(profile="logs")
    lines = [
        "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from "
        "194.117.26.69 port 50273 ssh2",
        "Feb 25 14:34:11 belka sshd[31603]: Failed password for invalid user ROOT from "
        "aaaa:bbbb:cccc:1234::1:1",
        "Jul 20 14:42:11 localhost sshd[22708]: Invalid user ftp from 192.0.2.1",
    ]
    facts = tracker.window_facts(lines)
    ips = {c.value for c in facts.entities["ip"]}
    assert ips == {"194.117.26.69", "aaaa:bbbb:cccc:1234::1:1", "192.0.2.1"}
    assert {c.value for c in facts.entities["user"]} >= {"ROOT", "ftp"}
    assert {c.value: c.count for c in facts.entities["program"]} == {"sshd": 3}
    assert facts.severity["failure"] == 2
    assert (facts.first_time, facts.last_time) == ("Feb 25 14:34:10", "Jul 20 14:42:11")


def test_the_template_cap_evicts_and_counts_but_the_sums_stay_exact() -> None:
    tracker = FactsTracker(profile="logs", max_clusters=5)
    # lines of 1..40 words: Drain never puts lines of different lengths in one template
    lines = ["app[1]: " + " ".join(["disk"] * (i + 1)) for i in range(40)]
    tracker.observe(lines)
    assert tracker.miner.alive <= 5
    assert tracker.miner.evicted >= 35 - 5
    facts = tracker.period_facts()
    assert sum(t.count for t in facts.templates) == facts.lines == 40
