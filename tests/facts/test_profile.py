"""detect_profile: real server logs are "logs"; Hamlet as dialogue, meetings and prose are not."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamd.facts.profile as profile
from streamd.facts.profile import SAMPLE, detect_profile, line_vote
from streamd.facts.transcript import split_speaker
from tests.facts.test_transcript import MEETING, hamlet_dialogue, hamlet_markdown

FAIL2BAN = Path(__file__).parents[2] / "daemon" / "data" / "fail2ban-sample.log"

# One window per format, in the shapes these servers write (Loghub's HDFS and Linux
# samples, Apache's and nginx's documented formats, a structured JSON logger).
LOG_FORMATS = {
    "hdfs": [
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block "
        "blk_38865049064139660 terminating",
        "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap "
        "updated: 10.251.73.220:50010 is added to blk_7128370237687728475 size 67108864",
        "081109 204106 329 INFO dfs.DataNode$PacketResponder: Received block "
        "blk_-6670958622368987959 of size 67108864 from /10.251.43.115",
    ],
    "linux-kernel": [
        "Jun 14 15:16:01 combo kernel: Kernel command line: ro root=LABEL=/ rhgb quiet",
        "Jun  9 06:06:20 combo kernel: There is not enough memory to do this, the system is "
        "being shut down now",
        "Jun 15 04:06:18 combo su(pam_unix)[21416]: session opened for user cyrus by (uid=0)",
    ],
    "apache-error": [
        "[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok "
        "/etc/httpd/conf/workers2.properties",
        "[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6",
    ],
    "apache-access": [
        '64.242.88.10 - - [07/Mar/2004:16:05:49 -0800] "GET /twiki/bin/edit/Main/Double_bounce'
        '_sender?topicparent=Main.ConfigurationVariables HTTP/1.1" 401 12846',
        '10.0.0.1 - - [17/May/2015:08:05:33 +0000] "POST /login HTTP/1.1" 200 512 "-" "curl/8.5"',
    ],
    "nginx-error": [
        '2014/04/02 12:37:58 [error] 6563#0: *1861 open() "/usr/share/nginx/html/favicon.ico" '
        "failed (2: No such file or directory)",
    ],
    "json": [
        '{"time":"2024-05-01T10:00:00Z","level":"info","msg":"request served","status":200}',
        '{"ts": 1714557600.5, "level": "error", "message": "we could not reach the database"}',
    ],
    "systemd": ["systemd[1]: Started Session 3 of user alice.", "sshd[812]: Accepted key for bob"],
}

TRANSCRIPTS = {
    "meeting": MEETING,
    "timed": [
        "[00:01:23] Alice: so I think we should ship on Friday",
        "[00:01:30] Bob: I'm not sure the tests are green yet",
        "10:31 Carol: they are, I checked this morning",
    ],
    "subtitles": [
        "1",
        "00:00:01.000 --> 00:00:04.000",
        "So I think we should ship on Friday.",
        "",
        "2",
        "00:00:04.500 --> 00:00:07.000",
        "I'm not sure the tests are green yet.",
    ],
    "notes": [
        "Attendees: Alice, Bob, Carol",
        "- Decided to ship v2.3 on 2024-05-01",
        "- Bob to fix the flaky test by Friday",
        "- Carol will write the release notes and send them to the list",
    ],
    "prose": [
        "It was the best of times, it was the worst of times, it was the age of wisdom,",
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of",
        "incredulity, it was the season of Light, it was the season of Darkness.",
    ],
}


def fail2ban_lines() -> list[str]:
    return FAIL2BAN.read_text(encoding="utf-8").splitlines()


def windows(lines: list[str], size: int = 20) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines) - size + 1, size)]


def test_real_server_logs_are_logs() -> None:
    lines = fail2ban_lines()
    assert detect_profile(lines) == "logs"
    assert all(detect_profile(w) == "logs" for w in windows(lines))
    assert all(line_vote(line) > 0 for line in lines)  # every one of the 411 lines


def test_hamlet_as_dialogue_is_a_transcript() -> None:
    dialogue = hamlet_dialogue()
    assert detect_profile(dialogue) == "transcript"
    assert all(detect_profile(w) == "transcript" for w in windows(dialogue))


def test_hamlet_markdown_and_its_bare_verse_are_transcripts() -> None:
    assert detect_profile(hamlet_markdown().splitlines()) == "transcript"
    verse = [split_speaker(line)[1] for line in hamlet_dialogue() if not line.startswith("(")]
    assert detect_profile(verse[:400]) == "transcript"  # no speaker labels at all


@pytest.mark.parametrize("name", LOG_FORMATS)
def test_log_formats_are_logs(name: str) -> None:
    assert detect_profile(LOG_FORMATS[name]) == "logs"


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_transcripts_and_prose_are_transcripts(name: str) -> None:
    assert detect_profile(TRANSCRIPTS[name]) == "transcript"


def test_the_majority_decides_a_mixed_window() -> None:
    logs, dialogue = fail2ban_lines()[:30], hamlet_dialogue()[4:14]
    assert detect_profile(logs + dialogue) == "logs"
    assert detect_profile(logs[:5] + dialogue) == "transcript"


def test_empty_blank_and_undecided_windows_are_logs() -> None:
    assert detect_profile([]) == "logs"
    assert detect_profile(["", "   "]) == "logs"
    assert detect_profile([fail2ban_lines()[0], hamlet_dialogue()[4]]) == "logs"  # a tie


def test_a_long_window_is_sampled(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def counting_vote(line: str) -> int:
        seen.append(line)
        return line_vote(line)

    monkeypatch.setattr(profile, "line_vote", counting_vote)
    dialogue = hamlet_dialogue()
    assert detect_profile(dialogue) == "transcript"
    assert len(seen) == SAMPLE
    assert seen[0] == dialogue[0] and seen[-1] in dialogue[-len(dialogue) // SAMPLE - 1 :]
