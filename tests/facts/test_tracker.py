"""FactsTracker on real logs (fail2ban's test data): exact counts per period and window, new
templates, the caps, entities, severities, time spans, and the transcript profile."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamd.facts.tracker as tracker_module
from streamd.facts.tracker import OTHER_TEMPLATES, FactsTracker
from tests.facts.test_transcript import MEETING

SAMPLE = Path(__file__).parents[2] / "daemon" / "data" / "fail2ban-sample.log"
LINES = [line for line in SAMPLE.read_text().splitlines() if line.strip()]


def test_template_counts_sum_to_the_lines_and_come_in_order() -> None:
    tracker = FactsTracker(profile="logs")
    tracker.observe(LINES[:200])
    tracker.observe(LINES[200:])
    facts = tracker.period_facts()
    assert facts.profile == "logs"
    assert facts.lines == len(LINES) == sum(t.count for t in facts.templates)
    assert len(facts.templates) == 51 and facts.templates[-1].template == OTHER_TEMPLATES
    shown = facts.templates[:-1]
    counts = [t.count for t in shown]
    assert counts == sorted(counts, reverse=True)
    assert facts.templates[-1].count == len(LINES) - sum(counts)
    # each example is a real line of the span that its template covers
    for template in shown:
        assert template.example in LINES
        assert tracker.window_facts([template.example]).templates[0].template == template.template


def test_ties_keep_the_first_seen_first_and_the_rest_is_folded() -> None:
    lines = [
        "Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM 1.2.3.4",
        "Jul 20 14:42:11 localhost sshd[22708]: Invalid user ftp from 192.0.2.1",
        "Sep 29 16:28:05 localhost sshd[16700]: Connection from 192.0.2.5",
        "Jan  5 01:31:41 www sshd[1643]: ROOT LOGIN REFUSED FROM ::ffff:1.2.3.4",
        "Jul 20 14:42:11 localhost sshd[22708]: Invalid user ftp from 192.0.2.2",
        "Sep 29 16:28:05 localhost sshd[16700]: Connection from 192.0.2.9",
        "Nov 23 21:50:37 sshd[7148]: Connection closed by 61.0.0.1",
    ]
    tracker = FactsTracker(profile="logs", max_templates=2)
    tracker.observe(lines)
    templates = tracker.period_facts().templates
    assert [(t.template, t.count) for t in templates] == [
        ("sshd: ROOT LOGIN REFUSED FROM <IP>", 2),
        ("sshd: Invalid user ftp from <IP>", 2),
        (OTHER_TEMPLATES, 3),
    ]
    # the folded templates' first line stands for them
    assert templates[2].example == lines[2]
    assert not templates[2].new


def test_new_templates_are_those_first_seen_in_the_period() -> None:
    sshd = [line for line in LINES if " sshd[" in line]
    tracker = FactsTracker(profile="logs", max_templates=1000)
    tracker.observe(sshd[:30])
    first = tracker.period_facts()
    assert all(t.new for t in first.templates)
    tracker.close_period()
    listening = "Mar  9 10:00:00 kiwi sshd[77]: Server listening on 0.0.0.0 port 22."
    tracker.observe([*sshd[:30], listening])  # the first period again, and one new event
    second = tracker.period_facts()
    assert second.lines == 31
    new = [t for t in second.templates if t.new]
    assert [t.template for t in new] == ["sshd: Server listening on <IP> port <NUM>."]
    old = {t.template for t in first.templates}
    assert all(t.template in old for t in second.templates if not t.new)
    # the window is judged against the same period
    window = tracker.window_facts([*sshd[:3], new[0].example])
    assert [t.new for t in window.templates].count(True) == 1


def test_entities_severities_and_time_span_of_a_period() -> None:
    lines = [
        "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT from "
        "194.117.26.69 port 50273 ssh2",
        "Jul 20 14:42:11 localhost sshd[22708]: Invalid user ftp from 192.0.2.1",
        "Feb 25 14:34:11 belka sshd[31603]: Failed password for invalid user ROOT from "
        "194.117.26.69 port 50274 ssh2",
        "Nov 24 23:46:43 host sshd[32686]: fatal: Read from socket failed: Connection reset "
        "by peer [preauth]",
        "Jul 20 14:42:12 localhost sshd[22708]: Invalid user ftp from 192.0.2.2 port 37220",
    ]
    tracker = FactsTracker(profile="logs", top_entities=2)
    tracker.observe(lines)
    facts = tracker.period_facts()
    ips = [(c.value, c.count) for c in facts.entities["ip"]]
    assert ips == [("194.117.26.69", 2), ("192.0.2.1", 1)]  # ties: the first seen
    assert [(c.value, c.count) for c in facts.entities["user"]] == [("ROOT", 2), ("ftp", 2)]
    assert [(c.value, c.count) for c in facts.entities["program"]] == [("sshd", 5)]
    assert "status" not in facts.entities and "path" not in facts.entities
    assert facts.severity == {
        "critical": 1,
        "error": 0,
        "warning": 0,
        "failure": 3,
        "denied": 4,
    }
    # first and last as the stream brought them
    assert (facts.first_time, facts.last_time) == ("Feb 25 14:34:10", "Jul 20 14:42:12")


def test_window_facts_learn_nothing_and_unknown_lines_are_their_own_template() -> None:
    tracker = FactsTracker(profile="logs")
    tracker.observe(LINES[:100])
    created, alive = tracker.miner.created, tracker.miner.alive
    unknown = "Mar  9 10:00:00 kiwi cron[77]: (root) CMD (run-parts /etc/cron.hourly)"
    window = tracker.window_facts([*LINES[:20], unknown])
    assert (tracker.miner.created, tracker.miner.alive) == (created, alive)
    assert window.lines == 21 == sum(t.count for t in window.templates)
    own = next(t for t in window.templates if t.example == unknown)
    assert own.template == "cron: (root) CMD (run-parts <PATH>)"
    assert not own.new and own.count == 1


def test_summary_facts_report_the_cap_and_the_evicted() -> None:
    tracker = FactsTracker(profile="logs", max_clusters=10)
    tracker.observe(LINES)
    summary = tracker.summary_facts(LINES[-50:])
    assert summary.templates_total == 10
    assert summary.templates_evicted == tracker.miner.created - 10 > 100
    assert (
        summary.since_last.lines == len(LINES) == sum(t.count for t in summary.since_last.templates)
    )
    assert summary.window.lines == 50 == sum(t.count for t in summary.window.templates)


def test_memory_stays_bounded_and_counts_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracker_module, "MAX_SPAN_TEMPLATES", 30)
    monkeypatch.setattr(tracker_module, "MAX_ENTITY_VALUES", 50)
    tracker = FactsTracker(profile="logs", max_clusters=10, max_templates=5)
    # distinct lines of distinct lengths, users and addresses: every line a new template
    lines = [
        f"Feb 25 14:34:{i % 60:02d} belka sshd[{i}]: Invalid user u{i} from 10.0.{i // 256}."
        f"{i % 256}" + " x" * (i % 97)
        for i in range(2000)
    ]
    tracker.observe(lines)
    period = tracker._period
    assert len(period.tallies) == 30 and len(period.entities["ip"]) == 50
    assert period.entity_overflow["ip"] == 2000 - 50
    facts = tracker.period_facts()
    assert facts.lines == 2000 == sum(t.count for t in facts.templates)
    assert facts.templates[-1].template == OTHER_TEMPLATES
    assert facts.templates[-1].example == lines[5]  # the first line not shown on its own
    assert tracker.miner.alive == 10


def test_transcripts_get_transcript_facts() -> None:
    tracker = FactsTracker(profile="transcript")
    tracker.observe(MEETING)
    facts = tracker.period_facts()
    assert facts.profile == "transcript" and facts.lines == len(MEETING)
    assert facts.templates == () and facts.speakers
    assert tracker.miner.created == 0  # nothing mined


def test_auto_tells_logs_from_a_transcript() -> None:
    tracker = FactsTracker()  # profile="auto"
    tracker.observe(MEETING)
    assert tracker.period_facts().profile == "transcript"
    assert tracker.window_facts(MEETING).profile == "transcript"
    tracker.close_period()
    tracker.observe(LINES[:50])
    logs = tracker.period_facts()
    assert logs.profile == "logs" and sum(t.count for t in logs.templates) == 50
    assert tracker.window_facts(LINES[:50]).profile == "logs"


def test_an_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        FactsTracker(profile="poetry")  # type: ignore[arg-type]
