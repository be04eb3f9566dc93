"""The soak's expectations of each kind of message hold for the real decoder and every
bundled line: that is what lets its table compare sent kinds with reasons and repairs."""

from __future__ import annotations

import pytest

from streamd.connectors import Accepted, Rejected, decode_message
from streamd.daemon.tools.soak.payloads import (
    BLOB_BYTES,
    REJECTED_AS,
    REPAIRS,
    Kind,
    Mix,
    sample_lines,
    spoil,
)


@pytest.mark.parametrize("kind", list(Kind))
def test_each_kind_gets_the_outcome_the_soak_counts_on(kind: Kind) -> None:
    lines = [b""] if kind is Kind.BLOB else sample_lines()  # a blob is the same whatever the line
    for line in lines:
        decoded = decode_message(spoil(kind, line), "soak")
        if kind in REJECTED_AS:
            assert isinstance(decoded, Rejected) and decoded.reason == REJECTED_AS[kind]
            continue
        assert isinstance(decoded, Accepted), (kind, line)
        repairs = {"replaced": decoded.replaced, "stripped": decoded.stripped, "cut": decoded.cut}
        expected = {"replaced": 0, "stripped": 0, "cut": 0} | REPAIRS.get(kind, {})
        assert repairs == expected, line


def test_a_blob_is_ten_megabytes() -> None:
    assert len(spoil(Kind.BLOB, b"")) == BLOB_BYTES == 10_000_000


def test_the_mix_spoils_about_the_share_asked_for_and_repeats_with_its_seed() -> None:
    mix = Mix(0.1, seed=7)
    kinds = [mix.next()[0] for _ in range(5000)]
    spoiled = sum(kind is not Kind.GOOD for kind in kinds) / len(kinds)
    assert 0.08 < spoiled < 0.12
    assert set(kinds) == {Kind.GOOD, Kind.BAD_UTF8, Kind.NUL, Kind.BROKEN_JSON}  # blobs: scheduled
    again = Mix(0.1, seed=7)
    assert [again.next()[0] for _ in range(5000)] == kinds
