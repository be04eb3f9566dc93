"""facts.miner on fail2ban's real sshd lines: the templates a person would make, the cap,
and the same results as drain3's own Drain."""

from __future__ import annotations

from pathlib import Path

import pytest
from drain3.drain import Drain

from streamd.facts.entities import scan_line
from streamd.facts.miner import DEFAULT_DEPTH, DEFAULT_SIM_TH, TemplateMiner, _FastDrain

SAMPLE = Path(__file__).parents[2] / "daemon" / "data" / "fail2ban-sample.log"
LINES = [line for line in SAMPLE.read_text().splitlines() if line.strip()]
SSHD = [line for line in LINES if ("program", "sshd") in scan_line(line).entities]


def _mined(lines: list[str]) -> tuple[TemplateMiner, dict[str, int]]:
    miner = TemplateMiner()
    ids = {line: miner.observe(scan_line(line).masked) for line in lines}
    return miner, ids


def _with(fragment: str, ending: str = "") -> list[str]:
    return [line for line in SSHD if fragment in line and line.endswith(ending)]


def test_the_sshd_lines_group_as_a_person_would() -> None:
    miner, ids = _mined(SSHD)
    failed_invalid = _with("for invalid user", " ssh2")
    failed_invalid = [line for line in failed_invalid if line.count(" from ") == 1]
    invalid = [line for line in _with("Invalid user ") if " port " in line and "user  " not in line]
    refused = [line for line in _with("ROOT LOGIN REFUSED FROM") if " port " not in line]
    assert len(failed_invalid) >= 4 and len(invalid) >= 2 and len(refused) == 2
    groups = [failed_invalid, invalid, refused]
    clusters = [{ids[line] for line in group} for group in groups]
    # each event in one template, whatever the user, address, port or auth method ...
    assert all(len(cluster) == 1 for cluster in clusters)
    # ... and three events, three templates
    assert len({next(iter(cluster)) for cluster in clusters}) == 3
    templates = [miner.template(next(iter(cluster))) for cluster in clusters]
    assert templates == [
        "sshd: Failed <*> for invalid user <*> from <IP> port <NUM> ssh2",
        "sshd: Invalid user <*> from <IP> port <NUM>",
        "sshd: ROOT LOGIN REFUSED FROM <IP>",
    ]


def test_accepted_and_failed_logins_stay_apart() -> None:
    _, ids = _mined(SSHD)
    accepted = _with("Accepted password for")
    failed = _with("Failed password for dan from")
    assert accepted and failed
    assert {ids[line] for line in accepted}.isdisjoint(ids[line] for line in failed)
    # a different reason is a different template too
    locked = _with("not allowed because account is locked")
    deny = _with("not allowed because listed in DenyUsers")
    assert ids[locked[0]] != ids[deny[0]]


def test_match_finds_templates_and_learns_nothing() -> None:
    miner, ids = _mined(SSHD)
    alive, created = miner.alive, miner.created
    for line in SSHD[:40]:
        assert miner.match(scan_line(line).masked) == ids[line]
    unseen = "sshd: Something nobody logged before at all today"
    assert miner.match(unseen) is None
    assert (miner.alive, miner.created) == (alive, created)


def test_the_cap_evicts_the_least_recently_seen_and_counts_it() -> None:
    miner = TemplateMiner(max_clusters=5)
    # lines of 1..40 words: Drain never puts lines of different lengths in one template
    ids = [miner.observe("app: " + " ".join(["disk"] * n)) for n in range(1, 41)]
    assert (miner.alive, miner.created, miner.evicted) == (5, 40, 35)
    with pytest.raises(KeyError):
        miner.template(ids[0])
    assert miner.template(ids[-1]) == "app: " + " ".join(["disk"] * 40)
    # seeing an old template keeps it alive; the least recently seen one goes
    miner.observe("app: " + " ".join(["disk"] * 36))  # id 36 is now the most recent
    miner.observe("app: new")
    assert miner.match("app: " + " ".join(["disk"] * 36)) == ids[35]
    assert miner.match("app: " + " ".join(["disk"] * 37)) is None
    assert miner.evicted == 36


def test_a_literal_wildcard_in_a_line_is_no_wildcard() -> None:
    miner = TemplateMiner()
    first = miner.observe("cron: job <*> done")
    assert miner.observe("cron: job nightly done") == first
    assert miner.template(first) == "cron: job <*> done"  # the job name varied
    other = miner.observe("cron: <*> <*> <*> <*>")
    assert other != first


@pytest.mark.parametrize("max_clusters", [1000, 20])
def test_the_fast_drain_gives_drain3s_results(max_clusters: int) -> None:
    masked = [scan_line(line).masked for line in LINES] * 2
    settings = {"depth": DEFAULT_DEPTH, "sim_th": DEFAULT_SIM_TH, "max_clusters": max_clusters}
    theirs, ours = Drain(**settings), _FastDrain(**settings)
    for line in masked:
        their_cluster, their_change = theirs.add_log_message(line)
        our_cluster, our_change = ours.add_log_message(line)
        assert our_cluster.cluster_id == their_cluster.cluster_id
        assert our_cluster.log_template_tokens == their_cluster.log_template_tokens
        assert our_change == their_change
    assert sorted(ours.id_to_cluster) == sorted(theirs.id_to_cluster)  # the same alive, too
    assert ours.clusters_counter == theirs.clusters_counter
