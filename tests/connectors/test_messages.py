"""The message decoder: any bytes in, a defined outcome out; then the rules by example."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.connectors.messages import (
    Accepted,
    DecoderConfig,
    Rejected,
    RejectReason,
    decode_message,
)

FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\ud800-\udfff]")  # all but tab
SMALL = DecoderConfig(max_message_bytes=200, max_line_chars=7, max_source_chars=5)

configs = st.builds(
    DecoderConfig,
    max_message_bytes=st.integers(1, 300),
    max_line_chars=st.integers(1, 40),
    max_source_chars=st.integers(1, 10),
)
envelope_like = st.builds(
    lambda text, source, junk: (json.dumps({"text": text, "source": source}) + junk).encode(),
    st.text(max_size=60),
    st.one_of(st.none(), st.text(max_size=10), st.integers()),
    st.sampled_from(["", "}", "x", " ", "\n"]),
)
hostile_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from('\x00\r\n\t\x1b[31m{}"\\\x85\x7f')),
    max_size=120,
).map(lambda text: text.encode("utf-8", errors="surrogatepass"))
payloads = st.one_of(st.binary(max_size=300), hostile_text, envelope_like)


def accepted(payload: bytes, config: DecoderConfig = SMALL) -> Accepted:
    outcome = decode_message(payload, "test", config)
    assert isinstance(outcome, Accepted), outcome
    return outcome


def rejected(payload: bytes, config: DecoderConfig = SMALL) -> Rejected:
    outcome = decode_message(payload, "test", config)
    assert isinstance(outcome, Rejected), outcome
    return outcome


@given(payloads, configs)
def test_any_bytes_give_clean_bounded_lines_or_a_reason(
    payload: bytes, config: DecoderConfig
) -> None:
    outcome = decode_message(payload, "src", config)
    if isinstance(outcome, Rejected):
        assert outcome.reason in set(RejectReason)
        assert outcome.detail and outcome.source == "src"
        return
    assert outcome.lines
    assert len(payload) <= config.max_message_bytes
    assert 0 < len(outcome.source) <= max(config.max_source_chars, len("src"))
    for line in outcome.lines:
        assert line.strip(), "blank lines are dropped"
        assert len(line) <= config.max_line_chars
        assert not FORBIDDEN.search(line), repr(line)
        line.encode("utf-8")  # no lone surrogates: the line can always be written out


@given(st.binary(min_size=1, max_size=300), configs)
def test_size_limit_is_exact(payload: bytes, config: DecoderConfig) -> None:
    outcome = decode_message(payload, "src", config)
    too_large = isinstance(outcome, Rejected) and outcome.reason is RejectReason.TOO_LARGE
    assert too_large == (len(payload) > config.max_message_bytes)


plain_lines = st.lists(
    # No whitespace or control characters, and no '{': nothing to strip, drop or
    # read as an envelope, so the lines must come back exactly (cut, at most).
    st.text(
        st.characters(
            exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp"),
            exclude_characters="{\x85\x1c\x1d\x1e\x1f",
        ),
        max_size=30,
    ),
    max_size=8,
)


@given(plain_lines, st.sampled_from(["\n", "\r\n", "\r", "\n\n"]))
def test_clean_text_comes_back_line_for_line(lines: list[str], newline: str) -> None:
    config = DecoderConfig(max_line_chars=1000)
    outcome = decode_message(newline.join(lines).encode(), "src", config)
    expected = [line for line in lines if line]
    if not expected:
        assert isinstance(outcome, Rejected) and outcome.reason is RejectReason.EMPTY
        return
    assert isinstance(outcome, Accepted)
    assert list(outcome.lines) == expected
    assert (outcome.replaced, outcome.stripped, outcome.cut) == (0, 0, 0)


@given(plain_lines.filter(any), st.integers(1, 9))
def test_long_lines_are_cut_into_pieces_not_dropped(lines: list[str], max_chars: int) -> None:
    outcome = accepted("\n".join(lines).encode(), DecoderConfig(max_line_chars=max_chars))
    assert "".join(outcome.lines) == "".join(lines)
    assert all(len(piece) <= max_chars for piece in outcome.lines)
    assert outcome.cut == sum(len(line) > max_chars for line in lines)


@given(st.text(max_size=40), st.binary(min_size=1, max_size=3).filter(lambda b: _invalid_utf8(b)))
def test_invalid_utf8_is_replaced_and_counted(text: str, garbage: bytes) -> None:
    payload = b"x" + text.encode() + garbage + b"y"
    outcome = accepted(payload, DecoderConfig())
    assert outcome.replaced >= 1
    assert "\ufffd" in "".join(outcome.lines)


@given(st.text(max_size=60))
def test_valid_utf8_counts_no_replacement(text: str) -> None:
    outcome = decode_message(("a" + text).encode(), "src")
    assert isinstance(outcome, Accepted) and outcome.replaced == 0


@given(st.text(max_size=60), st.text(st.characters(categories=("L", "N")), max_size=80))
def test_envelope_text_is_decoded_like_plain_text(text: str, source: str) -> None:
    config = DecoderConfig()
    plain = decode_message(text.encode(), "src", config)
    if isinstance(plain, Accepted) and text.lstrip().startswith("{"):
        return  # the text is itself envelope-like; covered elsewhere
    wrapped = decode_message(json.dumps({"text": text, "source": source}).encode(), "src", config)
    assert type(wrapped) is type(plain)
    if isinstance(wrapped, Accepted) and isinstance(plain, Accepted):
        assert wrapped.lines == plain.lines
        assert wrapped.source == (source[:64] or "src")


def _invalid_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


# --- the rules, by example ---------------------------------------------------


def test_line_ends_are_normalised_and_blank_lines_dropped() -> None:
    assert accepted(b"a\r\nb\rc\n\n  \n\td\n").lines == ("a", "b", "c", "\td")


def test_nul_control_characters_and_ansi_colours_are_stripped_tab_kept() -> None:
    outcome = accepted(b"\x1b[31mred\x1b[0m\x00 a\tb\x07\x7f")
    assert outcome.lines == ("red a\tb",)
    assert outcome.stripped == 5


def test_existing_replacement_characters_are_not_counted_as_invalid() -> None:
    outcome = accepted("ok \ufffd".encode() + b" \xff", DecoderConfig())
    assert outcome.lines == ("ok \ufffd \ufffd",)
    assert outcome.replaced == 1


def test_one_long_line_is_cut_into_bounded_pieces() -> None:
    outcome = accepted(b"x" * 10_000, DecoderConfig(max_line_chars=4096))
    assert [len(piece) for piece in outcome.lines] == [4096, 4096, 1808]
    assert outcome.cut == 1


def test_empty_and_whitespace_only_messages_are_rejected_as_empty() -> None:
    for payload in (b"", b"\n\r\n", b" \t ", b"\x00\x01", b'{"text": "  \\n"}'):
        assert rejected(payload).reason is RejectReason.EMPTY


def test_too_large_names_the_size_and_the_limit() -> None:
    outcome = rejected(b"a" * 201)
    assert outcome.reason is RejectReason.TOO_LARGE
    assert "201 bytes > max_message_bytes 200" in outcome.detail


def test_envelope_gives_text_and_source() -> None:
    outcome = accepted(b'{"text": "one\\ntwo", "source": "nginx", "level": 3}', DecoderConfig())
    assert (outcome.lines, outcome.source) == (("one", "two"), "nginx")


def test_envelope_source_is_cleaned_and_cut_and_null_means_default() -> None:
    assert accepted(b'{"source": " a\\u0000bcdefgh", "text": "t"}').source == "abcde"
    assert accepted(b'{"text": "t", "source": null}').source == "test"
    assert accepted(b'{"text": "t", "source": "\\n"}').source == "test"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"text": "unterminated',
        b'{"text": 42}',
        b'{"text": "a", "source": 7}',
        b'{"text": "a"} trailing',
        b'{"source": "a"}',
        b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"text": "a", "n": ' + b"9" * 5000 + b"}",
    ],
    ids=[
        "unterminated",
        "text-not-str",
        "source-not-str",
        "trailing",
        "no-text",
        "deep",
        "huge-int",
    ],
)
def test_malformed_envelopes_are_rejected_not_raised(payload: bytes) -> None:
    outcome = rejected(payload, DecoderConfig())
    assert outcome.reason is RejectReason.BAD_JSON_ENVELOPE
    assert outcome.detail


def test_json_log_lines_are_text_not_envelopes() -> None:
    line = b'{"level": "info", "msg": "started"}'
    assert accepted(line, DecoderConfig()).lines == (line.decode(),)
    assert accepted(b"{not json at all", DecoderConfig()).lines == ("{not json at all",)


def test_lone_surrogate_escapes_in_envelopes_are_replaced() -> None:
    outcome = accepted(b'{"text": "a\\ud800b"}', DecoderConfig())
    assert outcome.lines == ("a\ufffdb",)
    assert outcome.replaced == 1
