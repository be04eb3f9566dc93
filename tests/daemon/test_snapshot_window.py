"""TokenWindow: the ring of window token ids, against a plain list of the whole stream."""

from __future__ import annotations

import random

import pytest

from streamd.daemon.engine.window_ids import TokenWindow


def test_chunks_of_every_size_read_back_as_the_last_positions_of_the_stream() -> None:
    rng = random.Random(7)
    window = TokenWindow(13)
    stream: list[int] = []
    origin = 1000  # absolute positions do not start at 0 after a resume
    for _ in range(200):
        chunk = [rng.randrange(50_000) for _ in range(rng.randrange(0, 30))]
        window.write(origin + len(stream), chunk)
        stream.extend(chunk)
        end = origin + len(stream)
        for length in {0, 1, min(13, len(stream)), rng.randrange(min(13, len(stream)) + 1)}:
            assert window.read(end - length, end) == stream[len(stream) - length :]


def test_reading_more_than_it_holds_is_refused() -> None:
    window = TokenWindow(4)
    window.write(0, [1, 2, 3, 4, 5])
    assert window.read(1, 5) == [2, 3, 4, 5]
    with pytest.raises(ValueError, match=r"must be 0\.\.4 positions long"):
        window.read(0, 5)


def test_resize_keeps_the_window_and_then_holds_more() -> None:
    window = TokenWindow(4)
    window.write(10, [1, 2, 3, 4, 5, 6])  # positions 10..15; 12..15 kept
    window.resize(8, 13, 16)
    assert window.capacity == 8 and window.read(13, 16) == [4, 5, 6]
    window.write(16, [7, 8, 9, 10, 11])
    assert window.read(13, 21) == [4, 5, 6, 7, 8, 9, 10, 11]
