"""The session's side of snapshots, on the tiny random model: which ids the window holds,
and a restore that gives the session its window and counters back."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.engine.session import Session, SessionConfig
from streamd.errors import ConfigError

LINES = [
    f"Nov 28 04:{i:02d}:00 web-{i % 3} sshd[{1000 + i}]: Failed password for root from 10.0.0.{i}"
    for i in range(60)
]


def _session(loaded: LoadedModel, **overrides: object) -> Session:
    settings: dict[str, object] = {"max_capacity": 160, "chunk": 32, "summary_max_tokens": 4}
    settings.update(overrides)
    return Session(SessionConfig(**settings), loaded)  # type: ignore[arg-type]


def _feed(session: Session, lines: list[str]) -> list[int]:
    """Ingest the lines one message each; returns every stream id, in order."""
    ids: list[int] = []
    for line in lines:
        ids += session.tokenize_stream(line)
        session.ingest(line)
    return ids


def test_the_window_ids_are_the_last_tokens_of_the_stream(tiny_loaded: LoadedModel) -> None:
    session = _session(tiny_loaded)
    assert session.window_token_ids() == []
    stream = _feed(session, LINES[:2])  # fewer tokens than the window holds
    assert session.window_token_ids() == stream
    stream += _feed(session, LINES[2:])
    window = session.stats().window
    assert len(stream) > 3 * window  # the window has been overwritten several times
    assert session.window_token_ids() == stream[-window:]


def test_the_window_ids_follow_a_live_resize(tiny_loaded: LoadedModel) -> None:
    session = _session(tiny_loaded)
    stream = _feed(session, LINES[:30])
    pinned = session.stats().pinned
    session.set_max_capacity(pinned + 40)  # shrink: the last 40 stay visible
    assert session.window_token_ids() == stream[-40:]
    session.set_max_capacity(160)  # grow again within the ring: older tokens are visible again
    assert session.window_token_ids() == stream[-(160 - pinned) :]
    session.set_max_capacity(400)  # beyond the ring: reallocated, what was visible is kept
    assert session.window_token_ids() == stream[-(160 - pinned) :]
    stream += _feed(session, LINES[30:])
    stats = session.stats()
    assert stats.used == stats.max_capacity == 400
    assert session.window_token_ids() == stream[-stats.window :]


def test_a_restored_session_goes_on_where_the_snapshot_was(tiny_loaded: LoadedModel) -> None:
    original = _session(tiny_loaded)
    _feed(original, LINES[:40])
    original.summarize()
    state = original.snapshot_state()

    restored = _session(tiny_loaded)
    restored.restore(state)
    assert restored.window_token_ids() == list(state.window_ids) == original.window_token_ids()
    assert restored.snapshot_state() == state
    assert _counters(restored) == _counters(original)

    more = LINES[40:]
    _feed(original, more)
    _feed(restored, more)
    assert _counters(restored) == _counters(original)
    assert restored.window_token_ids() == original.window_token_ids()
    a, b = original.summarize(), restored.summarize()
    assert (a.stream_tokens, a.window_first, a.window_last) == (
        b.stream_tokens, b.window_first, b.window_last,
    )  # fmt: skip
    assert restored.stats().summaries == 2


def _counters(session: Session) -> tuple[int, ...]:
    stats = session.stats()
    return (stats.tokens_ingested, stats.tokens_evicted, stats.position, stats.used)


def test_before_any_eviction_a_restore_rebuilds_the_very_same_cache(
    tiny_loaded: LoadedModel,
) -> None:
    original = _session(tiny_loaded)
    original.ingest("\n".join(LINES[:2]))  # one message: the same chunks as the re-prefill
    assert original.stats().tokens_evicted == 0
    restored = _session(tiny_loaded)
    restored.restore(original.snapshot_state())
    for name, tensor in original.ring.tensors().items():
        assert torch.equal(restored.ring.tensors()[name], tensor), name


def test_a_restore_equals_a_fresh_stream_of_the_window(tiny_loaded: LoadedModel) -> None:
    """After evictions, the restored session computes what a new session that read only the
    window would: the next chunk's logits are the same, at positions that go on."""
    original = _session(tiny_loaded)
    _feed(original, LINES[:40])
    state = original.snapshot_state()
    restored = _session(tiny_loaded)
    restored.restore(state)
    fresh = _session(tiny_loaded)
    fresh.ingest_ids(list(state.window_ids))

    following = restored.tokenize_stream(LINES[40])[:32]
    ids = torch.tensor([following])
    assert restored.ring.head == state.position > fresh.ring.head
    from_restored = restored.runner.stream(ids, logits_to_keep=len(following))
    from_fresh = fresh.runner.stream(ids, logits_to_keep=len(following))
    torch.testing.assert_close(from_restored, from_fresh)


def test_a_state_that_does_not_fit_is_refused_and_the_session_stays_usable(
    tiny_loaded: LoadedModel,
) -> None:
    original = _session(tiny_loaded)
    _feed(original, LINES[:2])  # the window is not full: one more pinned token would fit
    state = original.snapshot_state()
    session = _session(tiny_loaded)
    vocab = int(tiny_loaded.model.config.vocab_size)
    bad = [
        (replace(state, pinned=state.pinned + 1, position=state.position + 1), "pinned prefix"),
        (replace(state, window_ids=(*state.window_ids[1:], vocab)), "past the vocabulary"),
        (replace(state, tokens_ingested=state.position), "counters disagree"),
    ]
    for wrong, reason in bad:
        with pytest.raises(ConfigError, match=reason):
            session.restore(wrong)
    session.ingest(LINES[0])
    assert session.stats().tokens_ingested == len(session.tokenize_stream(LINES[0]))


def test_a_restore_that_fails_midway_leaves_an_empty_session(
    tiny_loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _session(tiny_loaded)
    _feed(original, LINES[:10])
    session = _session(tiny_loaded)

    def device_error(ids: list[int], on_chunk: object = None) -> None:  # fault injection
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(session, "ingest_ids", device_error)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        session.restore(original.snapshot_state())
    monkeypatch.undo()
    stats = session.stats()
    assert (stats.tokens_ingested, stats.position, session.window_token_ids()) == (
        0, stats.pinned, [],
    )  # fmt: skip
    session.ingest(LINES[0])
    assert session.window_token_ids() == session.tokenize_stream(LINES[0])
