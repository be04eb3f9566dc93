"""StreamCache.rewind_scratch: a guided summary forgets what the model wrote past a
sentence end; the next words (a forward, or device-side decode steps) go where the
kept ones stop, as if the forgotten ones were never written."""

from __future__ import annotations

import copy

import pytest
import torch

from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout, LayoutError
from streamd.cache.plan import PlanKind
from streamd.cache.ring import EMPTY
from streamd.daemon.engine.grounding import Segment, SummaryPlan, Written
from streamd.daemon.engine.guided import OPENER_BUCKETS, GuidedDecoder, RequestShape
from streamd.daemon.engine.summarizer import PlainDecoder

PINNED, WINDOW, CHUNK, SCRATCH = 4, 16, 8, 40
VOCAB = 49152


def _tokens(count: int, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (count,), generator=generator).tolist()


def _ids(tokens: list[int]) -> torch.Tensor:
    return torch.tensor([tokens])


def _streamed(model: torch.nn.Module, scratch: int = SCRATCH) -> RingModel:
    """A ring that took in a pinned prefix and a few wraps of stream."""
    layout = CacheLayout.build(pinned=PINNED, window=WINDOW, chunk=CHUNK, scratch=scratch)
    runner = RingModel(model, build_ring_cache(model, layout))
    tokens = _tokens(PINNED + 5 * CHUNK, seed=1)
    runner.prefix(_ids(tokens[:PINNED]))
    for start in range(PINNED, len(tokens), CHUNK):
        runner.stream(_ids(tokens[start : start + CHUNK]))
    return runner


def _snapshot(runner: RingModel) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in runner.ring.tensors().items()}


def _assert_bit_identical(runner: RingModel, before: dict[str, torch.Tensor]) -> None:
    for name, tensor in runner.ring.tensors().items():
        assert torch.equal(tensor, before[name]), f"{name} changed by the summary"


def test_a_forward_after_a_rewind_sees_only_the_kept_tokens(tiny_model: torch.nn.Module) -> None:
    request, kept, junk, after = (_tokens(n, seed) for n, seed in ((6, 2), (3, 3), (5, 4), (4, 5)))
    rewound, plain = _streamed(tiny_model), _streamed(tiny_model)
    before = _snapshot(rewound)

    rewound.ring.begin_scratch()
    rewound.scratch(_ids(request))
    rewound.scratch(_ids(kept))
    rewound.scratch(_ids(junk))
    used = len(request) + len(kept)
    rewound.ring.rewind_scratch(used)
    assert rewound.ring.scratch_used == used
    start = rewound.ring.layout.scratch_start
    assert bool((rewound.ring.slot_pos[start + used :] == EMPTY).all())
    got = rewound.scratch(_ids(after), logits_to_keep=0)

    plain.ring.begin_scratch()
    plain.scratch(_ids(request))
    plain.scratch(_ids(kept))
    want = plain.scratch(_ids(after), logits_to_keep=0)
    assert rewound.ring.scratch_used == plain.ring.scratch_used == used + len(after)
    plain.ring.end_scratch()
    assert torch.equal(got, want)

    # the test can fail: without the rewind the junk is seen
    plain.ring.begin_scratch()
    for piece in (request, kept, junk):
        plain.scratch(_ids(piece))
    assert not torch.allclose(plain.scratch(_ids(after), logits_to_keep=0), want, atol=1e-4)
    plain.ring.end_scratch()

    rewound.ring.end_scratch()
    _assert_bit_identical(rewound, before)


def test_decode_steps_after_a_rewind_match_a_decode_that_stopped_there(
    tiny_model: torch.nn.Module,
) -> None:
    """StaticDecoder (device-side steps, arm_decode) over a rewound scratch: the same
    slots, positions and tokens as one that never wrote the forgotten tokens."""
    request, opener = _tokens(6, seed=6), _tokens(3, seed=7)
    results = []
    for overshoot in (True, False):
        runner = _streamed(tiny_model)
        before = _snapshot(runner)
        decoder = StaticDecoder(runner, VOCAB, DecodeOptions(frozenset(), block=4))
        ring = runner.ring
        ring.begin_scratch()
        logits = runner.scratch(_ids(request))
        start = ring.scratch_used
        # 3 tokens picked, 2 of them forwarded (the last pick never is); with overshoot
        # 9 picked, 8 forwarded, then all but the first 2 forgotten
        first = decoder.generate(logits[0, -1], 9 if overshoot else 3)
        if overshoot:
            assert ring.scratch_used == start + 8
            ring.rewind_scratch(start + 2)
        assert ring.scratch_used == start + 2
        logits = runner.scratch(_ids([first[2], *opener]), logits_to_keep=0)
        second = decoder.generate(logits[0, -1], 6, seen=first[:3], banned=first[:1])
        results.append((first[:3], logits, second, ring.scratch_used))
        ring.end_scratch()
        _assert_bit_identical(runner, before)
    (first_a, logits_a, second_a, used_a), (first_b, logits_b, second_b, used_b) = results
    assert first_a == first_b
    assert torch.equal(logits_a, logits_b)
    assert second_a == second_b and first_a[0] not in second_a
    assert used_a == used_b


def test_rewind_refuses_more_than_was_used_and_outside_a_summary(
    tiny_model: torch.nn.Module,
) -> None:
    runner = _streamed(tiny_model)
    with pytest.raises(RuntimeError, match="begin_scratch"):
        runner.ring.rewind_scratch(0)
    runner.ring.begin_scratch()
    runner.scratch(_ids(_tokens(3, seed=8)))
    with pytest.raises(LayoutError, match="rewind to 4 of 3"):
        runner.ring.rewind_scratch(4)
    runner.ring.end_scratch()


# ------------------------------------------------------ a guided summary's bookkeeping

WORDS = ("disk", "full", "ok.", "retry", "late.", "net", "down", "fine.")


def _decode(ids: list[int]) -> str:
    """A toy detokenizer whose sentences end often (the random model's picks are random)."""
    return " ".join(WORDS[i % len(WORDS)] for i in ids)


def _encode(text: str) -> list[int]:
    return [sum(map(ord, word)) % VOCAB for word in text.split()]


def _encode_many(texts: list[str]) -> list[list[int]]:
    return [_encode(text) for text in texts]


PLAN = SummaryPlan(
    digest="Facts:\nline one\nline two",
    question="What happened?",
    segments=tuple(
        Segment(opener, tokens, standalone=False)
        for opener, tokens in (("First", 12), ("Then", 12), ("Also", 12), ("Overall,", 20))
    ),
)


def _guided_run(
    runner: RingModel, generator: PlainDecoder | StaticDecoder, pad_openers: bool = False
) -> tuple[tuple[Written, ...], int, int]:
    """(what was written, tokens generated, summary slots used at the end); the
    stream cache checked bit-identical after."""
    before = _snapshot(runner)
    shape = RequestShape(tokens=24, pad_id=0, pad=True, pad_openers=pad_openers)
    guided = GuidedDecoder(runner, generator, _encode, _encode_many, _decode, shape, banned=[7, 15])
    runner.ring.begin_scratch()
    result = guided.run(PLAN, _encode("Answer:"), budget=40)
    used = runner.ring.scratch_used
    runner.ring.end_scratch()
    _assert_bit_identical(runner, before)
    return result.written, result.generated_tokens, used


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_guided_summary_is_the_same_whatever_the_decoder_block(
    tiny_model: torch.nn.Module, penalty: float
) -> None:
    """A block decoder (a GPU's 16 steps between host checks) overshoots each sentence
    end; what it keeps, the budget it spends and the cache it leaves must be those of
    a decoder that checks after every token."""
    outcomes = []
    for block in (0, 1, 16):  # 0: the plain path
        runner = _streamed(tiny_model, scratch=160)
        generator: PlainDecoder | StaticDecoder = PlainDecoder(runner, frozenset(), penalty, 0.0)
        if block:
            options = DecodeOptions(frozenset(), repetition_penalty=penalty, block=block)
            generator = StaticDecoder(runner, VOCAB, options)
        outcomes.append(_guided_run(runner, generator))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    written, generated, _ = outcomes[0]
    assert any(w.completion for w in written)  # some sentences were kept
    assert generated <= 40


def test_openers_padded_for_graphs_write_what_unpadded_ones_do(
    tiny_model: torch.nn.Module,
) -> None:
    """An opener padded at its end (to replay a captured graph of a bucket size) gives the
    model the same next-token logits, and the padding is rewound before the model writes:
    the same sentences, the same tokens spent, the same summary slots used at the end."""
    outcomes = []
    for pad_openers in (False, True):
        runner = _streamed(tiny_model, scratch=160)
        generator = PlainDecoder(runner, frozenset(), 1.3, 0.0)
        outcomes.append(_guided_run(runner, generator, pad_openers))
    assert outcomes[0] == outcomes[1]
    written, _, used = outcomes[0]
    assert sum(1 for w in written if w.completion) >= 2  # later openers did run
    assert used < 160 - max(OPENER_BUCKETS)  # the padding did not stay in the slots


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_guided_summary_through_cuda_graphs_matches_eager_steps(
    tiny_model: torch.nn.Module,
) -> None:
    """On a GPU: the padded first forward replays one captured graph, the decode steps
    another that reads the seen/banned masks set in place; the same words as steps
    run one by one, summary after summary."""
    model = copy.deepcopy(tiny_model).cuda()
    outcomes = []
    for graphs in (False, True):
        layout = CacheLayout.build(pinned=PINNED, window=WINDOW, chunk=CHUNK, scratch=160)
        runner = RingModel(model, build_ring_cache(model, layout), cuda_graphs=graphs)
        tokens = _tokens(PINNED + 5 * CHUNK, seed=1)
        runner.prefix(torch.tensor([tokens[:PINNED]], device="cuda"))
        for start in range(PINNED, len(tokens), CHUNK):
            runner.stream(torch.tensor([tokens[start : start + CHUNK]], device="cuda"))
        options = DecodeOptions(frozenset(), repetition_penalty=1.3, cuda_graph=graphs)
        decoder = StaticDecoder(runner, VOCAB, options)
        assert decoder.use_graph is graphs
        outcomes.append([_guided_run(runner, decoder, pad_openers=graphs) for _ in range(3)])
        if graphs:
            assert (PlanKind.SCRATCH, 24, 1) in runner._graphs  # the request
            # the openers: every position's logits, at a bucket size
            assert any(count == keep in OPENER_BUCKETS for _, count, keep in runner._graphs)
            assert decoder._graph is not None
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][0] == outcomes[1][1] == outcomes[1][2]
