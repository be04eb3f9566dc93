"""Attention for one decode query over the ring's slots, and which kernel does it on a CPU.

Two ways to the same numbers: SDPA's fused kernel, or two grouped matmuls with an fp32
softmax between them (K/V read once per KV head, never repeated). Which is faster on a
CPU depends on the CPU, by a factor of three to six, so it is timed, not assumed:
at 1,024 slots of the default model's shape (bf16), SDPA takes 63 us a layer on an Intel
Xeon with AMX and the matmuls 190 us; on an AMD EPYC (Zen 4: AVX-512 BF16, no AMX) SDPA
takes 555 us and the matmuls 90 us. On a GPU the matmuls are taken: SDPA's masked path
for a single query launches many more kernels, and a decode step there is launch-bound.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

_TRIAL_SLOTS = 1024  # the trial's K/V length: a typical window
_TRIAL_RUNS = 5


def single_query_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """query: [1, heads, 1, D]; key/value: [1, kv_heads, slots, D]; mask: [1, 1, 1, slots],
    bool (True = attend) or a float bias (0 = attend, -inf = not). Returns
    [1, 1, heads, D]."""
    _, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    if query.device.type == "cpu" and sdpa_faster_on_cpu(query.dtype, heads, kv_heads, dim):
        return sdpa_single_query(query, key, value, mask, scaling)
    return grouped_single_query(query, key, value, mask, scaling)


def sdpa_single_query(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """single_query_attention through SDPA's fused kernel."""
    heads = query.shape[1]
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, scale=scaling, enable_gqa=heads != key.shape[1]
    )  # [1, heads, 1, D]
    return out.transpose(1, 2)


def grouped_single_query(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """single_query_attention as two matmuls per KV head group, softmax in fp32. K/V
    are best contiguous: a slice of the ring's slots costs a copy of them in bmm."""
    _, heads, _, dim = query.shape
    kv_heads, slots = key.shape[1], key.shape[2]
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.view(kv_heads, heads // kv_heads, dim)  # [kv, group, D]
    keys = key[0].transpose(1, 2)  # [kv, D, slots]
    if mask.dtype == torch.bool:
        scores = torch.matmul(grouped, keys).float() * scale  # [kv, group, slots]
        scores = scores.masked_fill(~mask[0], float("-inf"))
    else:  # a float bias is added in the matmul itself: one op fewer
        bias = mask[0].expand(kv_heads, heads // kv_heads, slots)
        scores = torch.baddbmm(bias, grouped, keys, alpha=scale)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(weights, value[0])  # [kv, group, D]
    return out.reshape(1, 1, heads, dim)


@functools.cache
def sdpa_faster_on_cpu(dtype: torch.dtype, heads: int, kv_heads: int, dim: int) -> bool:
    """Whether SDPA beats the grouped matmuls for one query on this CPU, timed once per
    process and shape on random K/V of _TRIAL_SLOTS slots (5-40 ms on the 2-core EPYC,
    the first calls' setup included)."""
    query = torch.randn(1, heads, 1, dim, dtype=dtype)
    key, value = (torch.randn(1, kv_heads, _TRIAL_SLOTS, dim, dtype=dtype) for _ in range(2))
    bias = torch.zeros(1, 1, 1, _TRIAL_SLOTS, dtype=dtype)

    def best_time(kernel: Callable[..., torch.Tensor]) -> float:
        kernel(query, key, value, bias, None)  # the first call allocates, picks its path
        best = float("inf")
        for _ in range(_TRIAL_RUNS):
            began = time.perf_counter()
            kernel(query, key, value, bias, None)
            best = min(best, time.perf_counter() - began)
        return best

    return best_time(sdpa_single_query) < best_time(grouped_single_query)
