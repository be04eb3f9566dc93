"""One decode query's attention: the two CPU kernels streamd picks between by timing
attend alike, under a bool mask or a float bias, with grouped KV heads."""

from __future__ import annotations

import pytest
import torch

from streamd.cache.single_query import (
    grouped_single_query,
    sdpa_faster_on_cpu,
    sdpa_single_query,
    single_query_attention,
)

HEADS, KV_HEADS, DIM, SLOTS = 9, 3, 64, 300  # the default model's heads; a short window


def _inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, HEADS, 1, DIM, generator=generator).to(dtype)
    key, value = (torch.randn(1, KV_HEADS, SLOTS, DIM, generator=generator).to(dtype) for _ in "kv")
    attend = torch.rand(SLOTS, generator=generator) > 0.3  # gaps, as a slid ring has
    attend[-1] = True  # the token's own slot
    return query, key, value, attend.view(1, 1, 1, SLOTS)


def _reference(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attend: torch.Tensor):
    """Plain fp32 attention with each KV head repeated for its group of query heads."""
    group = HEADS // KV_HEADS
    keys = key.float().repeat_interleave(group, dim=1)  # [1, heads, slots, D]
    values = value.float().repeat_interleave(group, dim=1)
    scores = (query.float() @ keys.transpose(2, 3)) * DIM**-0.5  # [1, heads, 1, slots]
    weights = torch.softmax(scores.masked_fill(~attend, float("-inf")), dim=-1)
    return (weights @ values).transpose(1, 2)  # [1, 1, heads, D]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kernel", [sdpa_single_query, grouped_single_query])
@pytest.mark.parametrize("as_bias", [False, True])
def test_both_kernels_attend_as_plain_attention(dtype, kernel, as_bias: bool) -> None:
    query, key, value, attend = _inputs(dtype)
    mask = attend
    if as_bias:  # the CPU decode step's form: 0 = attend, -inf = not
        mask = torch.zeros(attend.shape, dtype=dtype).masked_fill_(~attend, float("-inf"))
    out = kernel(query, key, value, mask, None)
    assert out.shape == (1, 1, HEADS, DIM) and out.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(
        out.float(), _reference(query, key, value, attend), atol=tolerance, rtol=0
    )


def test_masked_slots_do_not_count() -> None:
    query, key, value, attend = _inputs(torch.float32)
    poisoned = value.clone()
    poisoned[:, :, ~attend.view(-1)] = 1e6  # what a masked slot holds must not leak in
    for kernel in (sdpa_single_query, grouped_single_query):
        torch.testing.assert_close(
            kernel(query, key, poisoned, attend, None), kernel(query, key, value, attend, None)
        )


def test_the_cpu_choice_is_made_once_and_used() -> None:
    faster = sdpa_faster_on_cpu(torch.float32, HEADS, KV_HEADS, DIM)
    assert sdpa_faster_on_cpu(torch.float32, HEADS, KV_HEADS, DIM) is faster  # cached
    query, key, value, attend = _inputs(torch.float32)
    chosen = sdpa_single_query if faster else grouped_single_query
    torch.testing.assert_close(
        single_query_attention(query, key, value, attend, None),
        chosen(query, key, value, attend, None),
        atol=0,
        rtol=0,
    )
