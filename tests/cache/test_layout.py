"""Slot and position arithmetic, checked exhaustively over small shapes and by property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamd.cache.layout import (
    CacheLayout,
    LayoutError,
    StreamCounters,
    pinned_positions,
    sink_anchor,
    visible_ring_positions,
)

shapes = st.tuples(
    st.integers(0, 8), st.integers(1, 64), st.integers(1, 32), st.integers(0, 16)
).map(lambda s: CacheLayout.build(pinned=s[0], window=s[1], chunk=s[2], scratch=s[3]))


@given(shapes, st.integers(0, 10_000), st.data())
def test_a_chunk_never_overwrites_what_its_queries_see(
    layout: CacheLayout, offset: int, data: st.DataObject
) -> None:
    stream_start = layout.pinned
    first = stream_start + offset
    count = data.draw(st.integers(1, layout.chunk))
    written = {layout.ring_slot(t) for t in range(first, first + count)}
    for query in range(first, first + count):
        for p in visible_ring_positions(layout, stream_start, query):
            if p < first:  # older tokens must still be in their slot
                assert layout.ring_slot(p) not in written


@given(shapes, st.integers(0, 10_000))
def test_ring_slots_of_r_consecutive_positions_are_distinct(
    layout: CacheLayout, first: int
) -> None:
    slots = [layout.ring_slot(t) for t in range(first, first + layout.ring)]
    assert len(set(slots)) == layout.ring
    assert all(layout.ring_start <= s < layout.scratch_start for s in slots)


@given(shapes, st.integers(0, 10_000), st.data())
def test_sink_distances_stay_bounded_however_long_the_stream(
    layout: CacheLayout, offset: int, data: st.DataObject
) -> None:
    stream_start = layout.pinned
    first = stream_start + offset
    count = data.draw(st.integers(1, layout.chunk))
    pinned = pinned_positions(layout, stream_start, first)
    for query in range(first, first + count):
        for i, p in enumerate(pinned):
            distance = query - p
            assert 0 < distance <= layout.pinned + layout.window + layout.chunk - 1
            if offset < layout.window:  # the window still reaches the sinks: true positions
                assert p == i


def test_pinned_keys_sit_just_before_the_oldest_visible_token() -> None:
    layout = CacheLayout.build(pinned=4, window=8, chunk=4, scratch=4)
    assert sink_anchor(layout, 4, 100) == 93
    assert pinned_positions(layout, 4, 100) == [89, 90, 91, 92]
    assert list(visible_ring_positions(layout, 4, 100)) == list(range(93, 101))


def test_worked_example_of_the_design_doc() -> None:
    layout = CacheLayout.build(pinned=4, window=8, chunk=4, scratch=0)
    assert layout.ring == 12
    overwritten = {layout.ring_slot(t) for t in range(88, 92)}
    assert {layout.ring_slot(t) for t in range(100, 104)} == overwritten


def test_positions_past_the_trained_context_are_refused_in_words() -> None:
    layout = CacheLayout.build(pinned=32, window=8000, chunk=256, scratch=192)
    with pytest.raises(LayoutError, match=r"8288 exceeds the model's trained context of 8192"):
        layout.check_positions(8192)
    layout.with_window(7904).check_positions(8192)


def test_the_way_out_of_a_position_overflow_is_one_that_works() -> None:
    """`--chunk 65536 --max-capacity 64` used to suggest "max_capacity at most -57344"."""
    huge_chunk = CacheLayout.build(pinned=53, window=11, chunk=65536, scratch=640)
    with pytest.raises(LayoutError) as refused:
        huge_chunk.check_positions(8192)
    assert str(refused.value).endswith("positions: use a chunk of at most 8128")
    CacheLayout.build(pinned=53, window=11, chunk=8128, scratch=640).check_positions(8192)
    big_window = CacheLayout.build(pinned=32, window=8000, chunk=256, scratch=192)
    with pytest.raises(LayoutError) as refused:  # no chunk would do: the summary slots, 192
        big_window.check_positions(8192)
    assert str(refused.value).endswith("positions: lower max_capacity to at most 7936")
    long_summaries = CacheLayout.build(pinned=32, window=100, chunk=64, scratch=9000)
    with pytest.raises(LayoutError, match=r"positions: write shorter summaries"):
        long_summaries.check_positions(8192)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pinned": -1, "window": 8, "chunk": 4, "scratch": 0}, "pinned = -1"),
        ({"pinned": 4, "window": 0, "chunk": 4, "scratch": 0}, "window = 0"),
        ({"pinned": 4, "window": 8, "chunk": 0, "scratch": 0}, "chunk = 0"),
    ],
)
def test_bad_shapes_name_the_value(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        CacheLayout.build(**kwargs)


def test_growing_past_the_ring_allocates_a_larger_one_and_shrinking_keeps_it() -> None:
    layout = CacheLayout.build(pinned=4, window=8, chunk=4, scratch=2)
    assert layout.with_window(6).ring == 12
    assert layout.with_window(6).with_window(8).ring == 12
    assert layout.with_window(20).ring == 24


@given(shapes, st.integers(0, 5000), st.integers(0, 5000))
def test_counters_add_up(layout: CacheLayout, seen: int, dropped: int) -> None:
    start = layout.pinned
    counters = StreamCounters(
        stream_start=start, head=start + seen, kept_from=start + min(dropped, seen)
    )
    assert counters.visible(layout) + counters.evicted(layout) == counters.seen
    assert counters.visible(layout) <= layout.window
