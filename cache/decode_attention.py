"""One decode token's attention as one op: rotary on q and k, the K/V write, attention.

Why: a small model's decode step is bound by kernel launches. On a CUDA GPU with Triton the
op is two kernels a layer instead of six to eight; elsewhere it runs
`decode_attention_reference`, the same arithmetic as torch ops (DESIGN.md, "Decoding").
"""

from __future__ import annotations

import math

import torch

from .single_query import single_query_attention

try:
    from .decode_attention_kernels import combine_kernel, partial_kernel
except ImportError:  # CPU wheels of torch come without Triton
    partial_kernel = combine_kernel = None


def decode_attention_reference(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    scale: float,
) -> torch.Tensor:
    """The op as torch ops.

    qkv: [heads * D + 2 * kv_heads * D], this token's projections before rotary.
    cos, sin: [D]; sin carries rotate-half's signs (negative first half).
    slot: [1] int64, where this token's key/value go. mask: [slots] bool, True =
    attend (the slot being written included). keys, values: [1, kv_heads, slots, D],
    written in place. Returns [heads * D].
    """
    kv_heads, dim = keys.shape[1], keys.shape[3]
    q_dim, kv_dim = heads * dim, kv_heads * dim
    q, k, v = qkv.split([q_dim, kv_dim, kv_dim])
    q = _rotate(q.view(1, heads, 1, dim), cos, sin)
    k = _rotate(k.view(1, kv_heads, 1, dim), cos, sin)
    keys.index_copy_(2, slot, k.to(keys.dtype))
    values.index_copy_(2, slot, v.view(1, kv_heads, 1, dim).to(values.dtype))
    out = single_query_attention(q, keys, values, mask.view(1, 1, 1, -1), scale)
    return out.reshape(q_dim)


def decode_attention_cpu(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: torch.Tensor,
    bias: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    scale: float,
) -> torch.Tensor:
    """decode_attention_reference's arithmetic in fewer ops, for a CPU, where each op costs
    a few microseconds whatever its size: q and k rotated together, and `bias`, the mask
    as a float [1, 1, 1, slots] (0 = attend, -inf = not) made once per step for all
    layers, into single_query_attention. Returns
    [heads * D]."""
    kv_heads, dim = keys.shape[1], keys.shape[3]
    qk = qkv[: (heads + kv_heads) * dim].view(1, heads + kv_heads, 1, dim)
    qk = qk * cos + qk.view(1, heads + kv_heads, 2, dim // 2).flip(2).view_as(qk) * sin
    v = qkv[(heads + kv_heads) * dim :].view(1, kv_heads, 1, dim)
    keys.index_copy_(2, slot, qk[:, heads:].to(keys.dtype))
    values.index_copy_(2, slot, v.to(values.dtype))
    out = single_query_attention(qk[:, :heads], keys, values, bias, scale)
    return out.reshape(heads * dim)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [..., D]; rotate_half(x) == roll(x, D/2) * signs, the signs are in sin."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def triton_available(device: torch.device) -> bool:
    return partial_kernel is not None and device.type == "cuda"


@torch.library.custom_op("streamd::decode_attention", mutates_args=("keys", "values"))
def decode_attention(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    scale: float,
) -> torch.Tensor:
    """See decode_attention_reference for the shapes; Triton kernels on a CUDA GPU
    (for head dims that are powers of two, as Triton's block shapes must be)."""
    dim = keys.shape[3]
    if triton_available(qkv.device) and dim >= 16 and dim & (dim - 1) == 0:
        return decode_attention_triton(qkv, cos, sin, slot, mask, keys, values, heads, scale)
    return decode_attention_reference(qkv, cos, sin, slot, mask, keys, values, heads, scale)


@decode_attention.register_fake
def _(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    scale: float,
) -> torch.Tensor:
    return qkv.new_empty(heads * keys.shape[3])


# ------------------------------------------------------------------- Triton

BLOCK_SLOTS = 64  # slots per inner step of a program
TARGET_PROGRAMS = 128  # about one program per SM of an H100/H200


def split_plan(slots: int, kv_heads: int) -> tuple[int, int]:
    """(splits, slots per split): enough programs to fill the GPU, whole blocks each."""
    wanted = max(1, TARGET_PROGRAMS // kv_heads)
    per_split = max(BLOCK_SLOTS, -(-slots // wanted))
    per_split = -(-per_split // BLOCK_SLOTS) * BLOCK_SLOTS
    return -(-slots // per_split), per_split


def decode_attention_triton(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    slot: torch.Tensor,
    mask: torch.Tensor,
    keys: torch.Tensor,
    values: torch.Tensor,
    heads: int,
    scale: float,
) -> torch.Tensor:
    """Two kernel launches; the partials are small and allocated per call (a captured
    graph keeps them in its pool)."""
    assert partial_kernel is not None and combine_kernel is not None
    _, kv_heads, slots, dim = keys.shape
    group = heads // kv_heads
    splits, per_split = split_plan(slots, kv_heads)
    part_max = qkv.new_empty((heads, splits), dtype=torch.float32)
    part_sum = torch.empty_like(part_max)
    part_acc = qkv.new_empty((heads, splits, dim), dtype=torch.float32)
    # One program per (KV head, run of slots): rotates q and k, attends over its run (online
    # softmax) and leaves partials (running max, sum and weighted values per head). The
    # split-0 program writes this token's key and value into its slot; no program reads that
    # slot (split 0 adds the token's own key and value from registers), so the write and the
    # reads never race.
    partial_kernel[(kv_heads, splits)](
        qkv, cos, sin, slot, mask, keys, values, part_max, part_sum, part_acc,
        scale, slots,
        keys.stride(1), keys.stride(2), values.stride(1), values.stride(2),
        HEADS=heads, KV_HEADS=kv_heads, GROUP=group, GROUP_PAD=max(16, _pow2(group)),
        D=dim, BLOCK=BLOCK_SLOTS, SPLITS=splits, PER_SPLIT=per_split,
    )  # fmt: skip
    out = qkv.new_empty(heads * dim)
    # One program per query head merges the partials.
    combine_kernel[(heads,)](
        part_max, part_sum, part_acc, out, D=dim, SPLITS=splits, SPLITS_PAD=_pow2(splits)
    )
    return out


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n)))
