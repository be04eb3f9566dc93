"""The ring cache drives the real HF forward to the logits of an independent reference."""

from __future__ import annotations

import pytest
import torch

from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.cache.ring import StreamCache

from .reference import ReferenceStream

PINNED, WINDOW, CHUNK, SCRATCH = 4, 16, 8, 12  # ring of 24 slots
STREAM_TOKENS = 200  # > 8 wraps of the ring
TOLERANCE = 1e-4


def _tokens(count: int, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 49152, (count,), generator=generator).tolist()


def _ring(model: torch.nn.Module, **kwargs: object) -> tuple[RingModel, StreamCache]:
    layout = CacheLayout.build(pinned=PINNED, window=WINDOW, chunk=CHUNK, scratch=SCRATCH)
    ring = build_ring_cache(model, layout, **kwargs)  # type: ignore[arg-type]
    return RingModel(model, ring), ring


def _ids(tokens: list[int]) -> torch.Tensor:
    return torch.tensor([tokens])


def _stream_logits(runner: RingModel, tokens: list[int], chunk: int) -> list[torch.Tensor]:
    """Logits [n, vocab] of every forward: the pinned prefix, then chunks of `chunk`."""
    out = [runner.prefix(_ids(tokens[:PINNED]), logits_to_keep=0)[0]]
    for start in range(PINNED, len(tokens), chunk):
        out.append(runner.stream(_ids(tokens[start : start + chunk]), logits_to_keep=0)[0])
    return out


@pytest.mark.parametrize("chunk", [1, 7, CHUNK])
def test_chunked_ingestion_matches_reference_across_wraps(
    tiny_model: torch.nn.Module, chunk: int
) -> None:
    tokens = _tokens(PINNED + STREAM_TOKENS)
    runner, ring = _ring(tiny_model)
    reference = ReferenceStream(tiny_model, pinned=PINNED, window=WINDOW)
    got = _stream_logits(runner, tokens, chunk)
    want = [reference.forward(tokens[:PINNED], 0)]
    want += [reference.forward(tokens[s : s + chunk], s) for s in range(PINNED, len(tokens), chunk)]
    assert ring.head == PINNED + STREAM_TOKENS
    assert ring.head // ring.layout.ring >= 8  # the ring really wrapped many times
    for index, (g, w) in enumerate(zip(got, want, strict=True)):
        error = (g.double() - w).abs().max().item()
        assert error < TOLERANCE, f"forward {index}: max |logit error| {error:.2e}"


def test_reference_disagrees_when_sinks_are_not_rerotated(tiny_model: torch.nn.Module) -> None:
    """The comparison above can fail: fixed sinks give other logits once the window slides."""
    from streamd.cache.ring import SinkMode

    tokens = _tokens(PINNED + 64, seed=1)
    runner, _ = _ring(tiny_model, sink_mode=SinkMode.FIXED)
    reference = ReferenceStream(tiny_model, pinned=PINNED, window=WINDOW)
    got = _stream_logits(runner, tokens, CHUNK)[-1]
    reference.forward(tokens[:PINNED], 0)
    for s in range(PINNED, len(tokens), CHUNK):
        want = reference.forward(tokens[s : s + CHUNK], s)
    assert (got.double() - want).abs().max().item() > 1e-3


def test_stream_at_position_1e8_matches_stream_at_0(tiny_model: torch.nn.Module) -> None:
    """Rebasing keeps RoPE angles small: a stream far out gives the same logits."""
    tokens = _tokens(PINNED + 120, seed=2)
    near, _ = _ring(tiny_model)
    far, far_ring = _ring(tiny_model, origin=10**8, rebase_threshold=32)
    near_logits = _stream_logits(near, tokens, CHUNK)
    far_logits = _stream_logits(far, tokens, CHUNK)
    assert far_ring.base > 10**8  # it did rebase, several times
    assert far_ring.base - far_ring.origin > 32 * 2
    for index, (a, b) in enumerate(zip(near_logits, far_logits, strict=True)):
        error = (a - b).abs().max().item()
        assert error < TOLERANCE, f"forward {index}: max |logit difference| {error:.2e}"


def test_summary_scratch_leaves_every_cache_tensor_bit_identical(
    tiny_model: torch.nn.Module,
) -> None:
    tokens = _tokens(PINNED + 11 * CHUNK, seed=3)
    runner, ring = _ring(tiny_model)
    _stream_logits(runner, tokens[:-CHUNK], CHUNK)
    before = {name: t.clone() for name, t in ring.tensors().items()}
    ring.begin_scratch()
    logits = runner.scratch(_ids(_tokens(5, seed=4)))
    for _ in range(SCRATCH - 5):
        runner.scratch(logits[:, -1].argmax(-1, keepdim=True))
    ring.end_scratch()
    for name, tensor in ring.tensors().items():
        assert torch.equal(tensor, before[name]), f"{name} changed by the summary"
    # and the stream goes on as if the summary never happened
    after_summary = runner.stream(_ids(tokens[-CHUNK:]), logits_to_keep=0)
    plain, _ = _ring(tiny_model)
    want = _stream_logits(plain, tokens, CHUNK)[-1]
    assert torch.equal(after_summary[0], want)


def test_summary_sees_the_window_as_it_stood_at_the_head(tiny_model: torch.nn.Module) -> None:
    tokens = _tokens(PINNED + 60, seed=5)
    summary = _tokens(SCRATCH, seed=6)
    runner, ring = _ring(tiny_model)
    _stream_logits(runner, tokens, CHUNK)
    head = ring.head
    ring.begin_scratch()
    got = runner.scratch(_ids(summary), logits_to_keep=0)[0]
    ring.end_scratch()
    # Reference: the summary tokens see pinned + the stream window at the head + themselves.
    reference = ReferenceStream(tiny_model, pinned=PINNED, window=WINDOW)
    reference.forward(tokens[:PINNED], 0)
    for s in range(PINNED, len(tokens), CHUNK):
        reference.forward(tokens[s : s + CHUNK], s)
    want = reference.forward(summary, head, fence=head)
    assert (got.double() - want).abs().max().item() < TOLERANCE
