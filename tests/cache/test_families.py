"""Every supported family, streamed through the ring, against the family's own forward.

Two oracles, both the model's own forward (eager attention, no streamd code):
- past many evictions, a one-layer model: for each query, a fresh forward over exactly
  what the ring promises it sees (the pinned tokens at their re-placed positions, then
  the window at its true positions) gives the same logits. One layer, because in a deeper
  model the window's cached K/V were computed when those tokens were read, from a context
  a fresh forward no longer has;
- before any eviction, a deeper model: the stream in chunks gives the logits of one plain
  causal forward over the same tokens (every layer, every family-specific step).
Gemma 3 runs with the window below and above its local layers' window.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from tests.tiny_families import FAMILIES, SLIDING_WINDOW, VOCAB, tiny_family_model

PINNED, SCRATCH = 4, 8
TOLERANCE = 2e-4  # fp32 logits of the same arithmetic in another order


def _tokens(count: int, seed: int = 0) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (count,), generator=generator).tolist()


def _ring(model: Any, window: int, chunk: int) -> RingModel:
    layout = CacheLayout.build(pinned=PINNED, window=window, chunk=chunk, scratch=SCRATCH)
    on_gpu = next(model.parameters()).device.type == "cuda"  # chunks replayed as CUDA graphs
    return RingModel(model, build_ring_cache(model, layout), cuda_graphs=on_gpu)


def _own_forward(twin: Any, tokens: list[int], positions: list[int]) -> torch.Tensor:
    """The family's own forward; logits of the last token, [vocab] on the CPU."""
    device = next(twin.parameters()).device
    with torch.inference_mode():
        ids, at = torch.tensor([tokens], device=device), torch.tensor([positions], device=device)
        out = twin(input_ids=ids, position_ids=at)
    return out.logits[0, -1].double().cpu()


def _streamed(runner: RingModel, tokens: list[int], chunk: int) -> list[torch.Tensor]:
    """Logits of every stream token, [vocab] each on the CPU, streamed in chunks after the
    prefix."""
    runner.prefix(runner.ids(tokens[:PINNED]))
    logits: list[torch.Tensor] = []
    for start in range(PINNED, len(tokens), chunk):
        piece = runner.ids(tokens[start : start + chunk])
        logits.extend(runner.stream(piece, logits_to_keep=0)[0].double().cpu())
    return logits


def _what_the_ring_shows(tokens: list[int], t: int, window: int, first: int) -> tuple[list, list]:
    """Tokens and positions a query at t sees: the pinned ones just before the window start
    of its chunk's first query `first`, then the window (t - window, t]."""
    anchor = max(PINNED, first - window + 1)
    pinned_at = list(range(anchor - PINNED, anchor))
    seen = list(range(max(PINNED, t - window + 1), t + 1))
    return tokens[:PINNED] + [tokens[p] for p in seen], pinned_at + seen


ONE_LAYER = [(family, None) for family in FAMILIES] + [
    ("gemma3_text", ["sliding_attention"]),
    ("gemma3_text", ["full_attention"]),
]


def check_past_evictions(
    family: str, kinds: list[str] | None, window: int, chunk: int, device: str = "cpu"
) -> None:
    """Every query after the first evictions against a fresh forward over what it sees.
    Chunks of 1 put the sinks right before each query's window; in longer chunks the later
    queries see the sinks placed for their chunk's first query."""
    model, twin = tiny_family_model(family, layers=1, kinds=kinds, device=device)
    tokens = _tokens(PINNED + 5 * window + chunk, seed=window + chunk)  # several wraps
    got = _streamed(_ring(model, window, chunk), tokens, chunk)
    for t in range(PINNED + window, len(tokens)):
        first = PINNED + (t - PINNED) // chunk * chunk
        seen, positions = _what_the_ring_shows(tokens, t, window, first)
        want = _own_forward(twin, seen, positions)
        error = (got[t - PINNED] - want).abs().max().item()
        assert error < TOLERANCE, f"{family} query {t}: max |logit error| {error:.2e}"


def check_before_eviction(family: str, device: str = "cpu") -> None:
    model, twin = tiny_family_model(family, layers=3, device=device)
    tokens = _tokens(PINNED + 30, seed=2)
    got = torch.stack(_streamed(_ring(model, window=64, chunk=7), tokens, 7))
    with torch.inference_mode():
        ids = torch.tensor([tokens], device=device)
        want = twin(input_ids=ids).logits[0, PINNED:].double().cpu()
    error = (got - want).abs().max().item()
    assert error < TOLERANCE, f"{family}: max |logit error| {error:.2e}"
    assert want.std().item() > 0.1  # logits that differ: the comparison can fail


@pytest.mark.parametrize("window", [6, 20])  # Gemma 3's local window (8) between the two
@pytest.mark.parametrize(("family", "kinds"), ONE_LAYER)
def test_past_evictions_each_query_sees_what_a_fresh_forward_of_its_window_sees(
    family: str, kinds: list[str] | None, window: int
) -> None:
    check_past_evictions(family, kinds, window, chunk=1)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma3_text"])
def test_past_evictions_in_chunks_later_queries_see_the_sinks_of_their_chunk(
    family: str,
) -> None:
    # Not Gemma 3: its own forward slides its local window by index, and the sinks of a
    # chunk's later queries sit further back than their index says.
    check_past_evictions(family, None, window=12, chunk=5)


@pytest.mark.parametrize("family", FAMILIES)
def test_before_any_eviction_the_stream_is_the_plain_causal_forward(family: str) -> None:
    check_before_eviction(family)


def test_the_oracle_notices_a_local_layer_that_sees_too_far() -> None:
    """Gemma 3's sliding layer must not see past its own window: the ring with the local
    mask removed disagrees with the family's forward (the check above can fail)."""
    model, twin = tiny_family_model("gemma3_text", layers=1, kinds=["sliding_attention"])
    window = 20
    runner = _ring(model, window, 1)
    runner.ring.sliding_window = None  # the masks built from here on ignore the local window
    runner.ring._inputs.sliding_window = None
    tokens = _tokens(PINNED + 3 * window, seed=3)
    got = _streamed(runner, tokens, 1)
    t = len(tokens) - 1
    seen, positions = _what_the_ring_shows(tokens, t, window, t)
    assert window > SLIDING_WINDOW
    assert (got[t - PINNED] - _own_forward(twin, seen, positions)).abs().max().item() > 1e-2
