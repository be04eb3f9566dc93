"""Live resize matches the reference; a long stream allocates no cache tensor."""

from __future__ import annotations

import resource

import pytest
import torch

from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout

from .reference import ReferenceStream

PINNED, CHUNK = 4, 8


def _tokens(count: int, seed: int) -> list[int]:
    return torch.randint(0, 49152, (count,), generator=torch.Generator().manual_seed(seed)).tolist()


def _feed(runner: RingModel, reference: ReferenceStream, tokens: list[int], first: int) -> float:
    worst = 0.0
    for s in range(0, len(tokens), CHUNK):
        piece = tokens[s : s + CHUNK]
        got = runner.stream(torch.tensor([piece]), logits_to_keep=0)[0]
        want = reference.forward(piece, first + s)
        worst = max(worst, (got.double() - want).abs().max().item())
    return worst


def test_shrink_then_grow_live_matches_reference(tiny_model: torch.nn.Module) -> None:
    layout = CacheLayout.build(pinned=PINNED, window=16, chunk=CHUNK, scratch=0)
    ring = build_ring_cache(tiny_model, layout)
    runner = RingModel(tiny_model, ring)
    reference = ReferenceStream(tiny_model, pinned=PINNED, window=16)
    prefix = _tokens(PINNED, 0)
    runner.prefix(torch.tensor([prefix]))
    reference.forward(prefix, 0)
    errors = [_feed(runner, reference, _tokens(64, 1), PINNED)]

    ring.set_window(6)  # shrink: a mask change, same tensors
    reference.window = 6
    pointer = ring.keys[0].data_ptr()
    errors.append(_feed(runner, reference, _tokens(40, 2), ring.head))
    assert ring.keys[0].data_ptr() == pointer

    ring.set_window(12)  # grow within the ring allocated for 16: still the same tensors
    reference.window = 12
    errors.append(_feed(runner, reference, _tokens(40, 3), ring.head))
    assert ring.keys[0].data_ptr() == pointer

    kept_from = ring.head - 12
    ring.set_window(40)  # beyond the ring: reallocated once, the live window copied
    reference.window = 40
    reference.kept_from = kept_from
    assert ring.keys[0].data_ptr() != pointer
    assert ring.counters().visible(ring.layout) == 12
    errors.append(_feed(runner, reference, _tokens(80, 4), ring.head))
    assert max(errors) < 1e-4, errors


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_100k_streamed_tokens_allocate_no_cache_tensor_and_rss_stays_flat(
    tiny_model: torch.nn.Module,
) -> None:
    chunk = 64
    layout = CacheLayout.build(pinned=PINNED, window=256, chunk=chunk, scratch=16)
    ring = build_ring_cache(tiny_model, layout)
    runner = RingModel(tiny_model, ring)
    runner.prefix(torch.tensor([_tokens(PINNED, 5)]))
    ids = torch.randint(0, 49152, (1, chunk), generator=torch.Generator().manual_seed(6))

    def stream(tokens: int) -> None:
        for _ in range(tokens // chunk):
            runner.stream(ids)

    stream(10_000)  # warm-up: allocator pools and the ring fill
    pointers = {name: t.data_ptr() for name, t in ring.tensors().items()}
    rss_after_warmup = _rss_kib()
    stream(100_000)
    assert ring.head - ring.stream_start >= 100_000 + 9_900
    assert {name: t.data_ptr() for name, t in ring.tensors().items()} == pointers
    growth_kib = _rss_kib() - rss_after_warmup
    assert growth_kib < 8 * 1024, f"RSS grew {growth_kib} KiB over 100k tokens"
    assert ring.counters().evicted(ring.layout) == ring.head - ring.stream_start - 256


def test_a_forward_that_fails_midway_leaves_the_stream_as_it_was(
    tiny_model: torch.nn.Module,
) -> None:
    """A CUDA OOM inside a chunk (injected here: a layer that raises) must not poison the
    session: the next chunks give the logits of a stream that never saw the failure."""
    ids = torch.randint(0, 100, (4 + 3 * 8,), generator=torch.Generator().manual_seed(5))
    layout = CacheLayout.build(pinned=4, window=12, chunk=8, scratch=4)

    def streamed(fail_second_chunk: bool) -> list[torch.Tensor]:
        runner = RingModel(tiny_model, build_ring_cache(tiny_model, layout))
        runner.prefix(ids[:4].unsqueeze(0))
        out = [runner.stream(ids[4:12].unsqueeze(0))]
        if fail_second_chunk:
            layer = tiny_model.model.layers[1]

            def fail(*_: object) -> None:
                raise torch.OutOfMemoryError("injected: CUDA out of memory")

            handle = layer.register_forward_pre_hook(fail)
            try:
                with pytest.raises(torch.OutOfMemoryError):
                    runner.stream(ids[12:20].unsqueeze(0))
            finally:
                handle.remove()
            runner.ring.set_window(10)  # a live resize is allowed again after the failure
            runner.ring.set_window(12)
        out += [runner.stream(ids[s : s + 8].unsqueeze(0)) for s in (12, 20)]
        return out

    for failed, clean in zip(streamed(True), streamed(False), strict=True):
        torch.testing.assert_close(failed, clean, rtol=0, atol=0)
