"""The family oracle tests of tests/cache/test_families.py on a GPU: the same tiny models
in fp32, streamed with CUDA graphs, against each family's own forward on the GPU."""

from __future__ import annotations

import pytest
import torch

from tests.cache.test_families import ONE_LAYER, check_before_eviction, check_past_evictions
from tests.cache.test_refresh import check_refresh_against_the_oracle
from tests.tiny_families import FAMILIES

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("window", [6, 20])
@pytest.mark.parametrize(("family", "kinds"), ONE_LAYER)
def test_past_evictions_on_a_gpu(family: str, kinds: list[str] | None, window: int) -> None:
    check_past_evictions(family, kinds, window, chunk=1, device="cuda")


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "gemma3_text"])
def test_past_evictions_in_chunks_on_a_gpu(family: str) -> None:
    check_past_evictions(family, None, window=12, chunk=5, device="cuda")


@pytest.mark.parametrize("family", FAMILIES)
def test_before_any_eviction_on_a_gpu(family: str) -> None:
    check_before_eviction(family, device="cuda")


@pytest.mark.parametrize("family", ["llama", "qwen3"])
@pytest.mark.parametrize("rebase_threshold", [2**15, 16])
def test_a_refresh_replayed_as_cuda_graphs_gives_the_fresh_forward(
    family: str, rebase_threshold: int
) -> None:
    check_refresh_against_the_oracle(family, True, rebase_threshold, device="cuda")
