"""`streamd eval`'s samples are blocks of consecutive targets, each scored by one fresh
forward of the recompute oracle: the block's k-th target must get exactly the context of a
one-target oracle over max_capacity - block/2 + k tokens."""

from __future__ import annotations

import torch

from streamd.daemon.engine.loading import LoadedModel
from streamd.daemon.tools.evaluate import ratio, ratio_range, recompute_nll, sample_targets


def _ids(loaded: LoadedModel, tokens: int) -> torch.Tensor:
    text = "A stream of words that the oracle reads again from the start, line by line. " * 40
    return torch.tensor(loaded.encode(text, allow_special=False)[:tokens])


def test_samples_are_whole_blocks_that_never_overlap() -> None:
    targets = sample_targets(1000, 20, seed=3, block=16)
    assert len(targets) == 320 and len(set(targets)) == 320
    assert min(targets) >= 1 and max(targets) <= 999
    for first in range(0, 320, 16):
        block = targets[first : first + 16]
        assert block == list(range(block[0], block[0] + 16))
    # more samples than fit: every block of the grid, once
    assert len(sample_targets(100, 50, seed=0, block=16)) == 16 * ((100 - 16) // 16 + 1)
    assert sample_targets(1000, 20, seed=3) == sorted(set(sample_targets(1000, 20, seed=3)))


def test_a_block_scores_each_target_with_the_window_before_it(tiny_loaded: LoadedModel) -> None:
    ids, context, block = _ids(tiny_loaded, 300), 48, 8
    targets = sample_targets(300, 6, seed=1, block=block)
    blocked = recompute_nll(tiny_loaded.model, ids, targets, context, batch=4, block=block)
    for index, target in enumerate(targets):
        k = index % block
        first = target - k
        # one target, one forward, over the tokens the block's forward gave it: contexts
        # centred on the window, context - 4 .. context + 3
        window = min(first, context - block // 2) + k
        alone = recompute_nll(tiny_loaded.model, ids, [target], window, batch=1)
        assert abs(float(blocked[index]) - float(alone[0])) < 1e-3, (target, k)


def test_the_range_is_taken_over_blocks_not_targets() -> None:
    # two blocks, each a constant difference: the per-target spread would call it certain
    nll, oracle = [1.0] * 4 + [1.2] * 4, [1.0] * 8
    low, high = ratio_range(nll, oracle, block=4)
    assert low < 1.0 < ratio(nll, oracle) < high
    low_targets, high_targets = ratio_range(nll, oracle, block=1)
    assert high_targets - low_targets < high - low


def test_the_oracle_with_sinks_puts_the_first_tokens_before_its_window(
    tiny_loaded: LoadedModel,
) -> None:
    # tests/bench/sinks_recomputed.py: the oracle with a stream's pinned tokens in front
    ids, context, sinks = _ids(tiny_loaded, 300), 48, 4
    near, far = 30, 200  # a window reaching the text's start, and one that does not
    nll = recompute_nll(tiny_loaded.model, ids, [near, far], context, batch=2, sinks=sinks)
    plain = recompute_nll(tiny_loaded.model, ids, [near], context, batch=1)
    assert abs(float(nll[0]) - float(plain[0])) < 1e-3
    row = torch.cat([ids[:sinks], ids[far - context + sinks : far]]).unsqueeze(0)
    with torch.inference_mode():
        logits = tiny_loaded.model(input_ids=row, use_cache=False).logits[0, -1].float()
    alone = torch.nn.functional.cross_entropy(logits.unsqueeze(0), ids[far : far + 1])
    assert abs(float(nll[1]) - float(alone)) < 1e-3
