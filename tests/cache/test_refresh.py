"""Refreshing the window: its keys and values recomputed from its own tokens, in place.

In a model of several layers a key computed while streaming saw tokens that have since
been evicted; right after a refresh the next query sees exactly what a fresh forward over
the pinned tokens and its window computes (the oracle of `streamd eval` with the sinks in
front). Tiny random models, fp32, CPU.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout, StreamCounters, refresh_every, refresh_floor
from streamd.cache.ring import EMPTY
from tests.cache.test_families import _own_forward, _tokens
from tests.tiny_families import tiny_family_model

PINNED, WINDOW, CHUNK = 4, 12, 5
TOLERANCE = 2e-4


def _runner(model: Any, every: int, rebase_threshold: int = 2**15) -> RingModel:
    """Refreshing every `every` stream tokens (0: never); CUDA graphs where the model is."""
    layout = CacheLayout.build(pinned=PINNED, window=WINDOW, chunk=CHUNK, scratch=4)
    ring = build_ring_cache(model, layout, rebase_threshold=rebase_threshold)
    graphs = ring.device.type == "cuda"
    return RingModel(model, ring, cuda_graphs=graphs, refresh=str(every) if every else "off")


def _first_queries_against_the_oracle(
    runner: RingModel, twin: Any, tokens: list[int]
) -> list[float]:
    """Max |logit error| of each chunk's first query once the window slides, against the
    twin's own forward over the pinned tokens and that query's window (positions contiguous)."""
    runner.prefix(runner.ids(tokens[:PINNED]))
    errors = []
    for start in range(PINNED, len(tokens), CHUNK):
        logits = runner.stream(runner.ids(tokens[start : start + CHUNK]), logits_to_keep=0)
        floor = start - WINDOW + 1
        if floor <= PINNED:
            continue
        seen = tokens[:PINNED] + tokens[floor : start + 1]
        want = _own_forward(twin, seen, list(range(floor - PINNED, start + 1)))
        errors.append((logits[0, 0].double().cpu() - want).abs().max().item())
    return errors


def check_refresh_against_the_oracle(
    family: str, full_chunks: bool, rebase_threshold: int, device: str = "cpu"
) -> None:
    """Refreshed before every chunk, each chunk's first query against the fresh forward.
    full_chunks: refresh pieces of C tokens reaching below the window (CUDA graphs' way)."""
    model, twin = tiny_family_model(family, layers=3, device=device)
    runner = _runner(model, every=1, rebase_threshold=rebase_threshold)
    runner.refresh_in_full_chunks = full_chunks
    errors = _first_queries_against_the_oracle(runner, twin, _tokens(PINNED + 8 * WINDOW))
    assert len(errors) >= 15
    assert max(errors) < TOLERANCE


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("full_chunks", [False, True])
@pytest.mark.parametrize("rebase_threshold", [2**15, 16])
def test_after_a_refresh_a_deep_model_sees_what_a_fresh_forward_of_its_window_computes(
    family: str, full_chunks: bool, rebase_threshold: int
) -> None:
    check_refresh_against_the_oracle(family, full_chunks, rebase_threshold)


def test_without_a_refresh_the_same_check_fails() -> None:
    """The check above can fail: streamed keys of a deep model differ from the oracle's."""
    model, twin = tiny_family_model("llama", layers=3)
    errors = _first_queries_against_the_oracle(
        _runner(model, every=0), twin, _tokens(PINNED + 8 * WINDOW)
    )
    assert min(errors) > 100 * TOLERANCE


def test_a_refresh_hides_what_is_older_than_its_window_and_keeps_the_head() -> None:
    model, _ = tiny_family_model("llama", layers=2)
    runner = _runner(model, every=0)
    tokens = _tokens(PINNED + 3 * WINDOW)
    runner.prefix(runner.ids(tokens[:PINNED]))
    for start in range(PINNED, len(tokens), CHUNK):
        runner.stream(runner.ids(tokens[start : start + CHUNK]))
    ring = runner.ring
    pointers = {name: t.data_ptr() for name, t in ring.tensors().items()}
    head, floor = ring.head, ring.head - WINDOW + 1
    runner.refresh(floor)
    assert ring.head == head and ring.refreshed_at == head and ring.kept_from == floor
    ring_pos = ring.slot_pos[ring.layout.ring_start : ring.layout.scratch_start]
    held = sorted(p for p in ring_pos.tolist() if p != EMPTY)
    assert held == list(range(floor, head))
    assert {name: t.data_ptr() for name, t in ring.tensors().items()} == pointers


def test_a_grown_window_is_refreshed_from_the_oldest_token_it_still_holds() -> None:
    """After a live resize that reallocates, the window holds less than it may show: the
    refresh starts at the oldest token held, and the next query matches a fresh forward
    over it, with the sinks where the grown window starts (as without a refresh)."""
    model, twin = tiny_family_model("llama", layers=3)
    runner = _runner(model, every=0)
    tokens = _tokens(PINNED + 4 * WINDOW + 1)
    runner.prefix(runner.ids(tokens[:PINNED]))
    for start in range(PINNED, len(tokens) - 1, CHUNK):
        runner.stream(runner.ids(tokens[start : min(start + CHUNK, len(tokens) - 1)]))
    ring = runner.ring
    ring.set_window(3 * WINDOW)
    floor = refresh_floor(ring.layout, ring.counters(), ring.refreshed_at, every=1)
    assert floor == ring.kept_from > ring.head - 3 * WINDOW + 1
    runner.refresh(floor)
    head = ring.head
    got = runner.stream(runner.ids(tokens[head : head + 1]))[0, -1].double().cpu()
    anchor = head - 3 * WINDOW + 1  # the sinks sit where the grown window starts
    seen = tokens[:PINNED] + tokens[floor : head + 1]
    want = _own_forward(twin, seen, [*range(anchor - PINNED, anchor), *range(floor, head + 1)])
    assert (got - want).abs().max().item() < TOLERANCE


LAYOUT = CacheLayout.build(pinned=4, window=100, chunk=10, scratch=0)


@pytest.mark.parametrize(
    ("head", "refreshed_at", "every", "want"),
    [
        (103, 4, 100, None),  # nothing evicted yet: every key saw what it still sees
        (104, 4, 100, 5),  # the first eviction, 100 tokens after the last refresh
        (150, 120, 100, None),  # 30 tokens since the last refresh
        (220, 120, 100, 121),  # 100 since: due; the window starts at head - W + 1
        (220, 120, 0, None),  # 0: never
    ],
)
def test_a_refresh_is_due_every_so_many_tokens_once_the_window_slides(
    head: int, refreshed_at: int, every: int, want: int | None
) -> None:
    counters = StreamCounters(stream_start=4, head=head, kept_from=4)
    assert refresh_floor(LAYOUT, counters, refreshed_at, every) == want


@pytest.mark.parametrize("setting", ["-1", "0", "sometimes", ""])
def test_a_bad_refresh_setting_is_refused_with_the_value_and_the_choices(setting: str) -> None:
    model, _ = tiny_family_model("llama", layers=1)
    layout = CacheLayout.build(pinned=PINNED, window=WINDOW, chunk=CHUNK, scratch=4)
    with pytest.raises(ValueError, match=f"refresh = '{setting}': must be 'auto', 'off' or"):
        RingModel(model, build_ring_cache(model, layout), refresh=setting)


@pytest.mark.parametrize(
    ("setting", "max_capacity", "gpu", "want"),
    [
        ("auto", 256, False, 126),
        ("auto", 512, False, 254),
        ("auto", 1024, False, 0),  # on a CPU the ingest compute it costs is not spare
        ("auto", 1024, True, 510),
        ("auto", 4096, True, 2046),
        ("off", 256, True, 0),
        ("64", 4096, False, 64),
    ],
)
def test_auto_refreshes_twice_per_window_on_a_gpu_and_on_a_cpu_up_to_512(
    setting: str, max_capacity: int, gpu: bool, want: int
) -> None:
    layout = CacheLayout.build(pinned=4, window=max_capacity - 4, chunk=64, scratch=0)
    assert refresh_every(setting, layout, gpu) == want


def test_logits_do_not_change_when_no_refresh_is_due() -> None:
    """refresh_every larger than the stream: the same logits as no refresh at all."""
    model, _ = tiny_family_model("llama", layers=2)
    tokens = _tokens(PINNED + 3 * WINDOW)
    outputs = []
    for every in (0, 10_000):
        runner = _runner(model, every)
        runner.prefix(runner.ids(tokens[:PINNED]))
        outputs.append(
            torch.cat(
                [
                    runner.stream(runner.ids(tokens[s : s + CHUNK]), logits_to_keep=0)[0]
                    for s in range(PINNED, len(tokens), CHUNK)
                ]
            )
        )
    assert torch.equal(outputs[0], outputs[1])
