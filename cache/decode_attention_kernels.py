"""Triton kernels of streamd::decode_attention (see decode_attention.py for the why).

Imported only where Triton is installed. Triton kernels take untyped pointer
arguments, so mypy does not require annotations here (pyproject.toml).
"""

import triton
import triton.language as tl


@triton.jit
def _rotated(base, offsets, rot_offsets, cos, sin, mask):
    """Rows of qkv at base + offsets, rotated; rot_offsets point at the other half."""
    x = tl.load(base + offsets, mask=mask, other=0.0).to(tl.float32)
    x_rot = tl.load(base + rot_offsets, mask=mask, other=0.0).to(tl.float32)
    return x * cos + x_rot * sin


@triton.jit
def partial_kernel(
    qkv, cos_ptr, sin_ptr, slot_ptr, mask_ptr, keys, values,
    part_max, part_sum, part_acc,
    scale, slots,
    k_head_stride, k_slot_stride, v_head_stride, v_slot_stride,
    HEADS: tl.constexpr, KV_HEADS: tl.constexpr, GROUP: tl.constexpr,
    GROUP_PAD: tl.constexpr, D: tl.constexpr, BLOCK: tl.constexpr, SPLITS: tl.constexpr,
    PER_SPLIT: tl.constexpr,
):  # fmt: skip
    kv_head = tl.program_id(0)
    split = tl.program_id(1)
    dtype = qkv.dtype.element_ty
    d = tl.arange(0, D)
    rot = (d + D // 2) % D
    cos = tl.load(cos_ptr + d).to(tl.float32)
    sin = tl.load(sin_ptr + d).to(tl.float32)

    # q of this KV head's query heads, rotated and rounded as the model's dtype
    g = tl.arange(0, GROUP_PAD)
    head = kv_head * GROUP + g
    real = g < GROUP
    q_rows = head[:, None] * D
    q = _rotated(qkv, q_rows + d[None, :], q_rows + rot[None, :], cos, sin, real[:, None])
    q = q.to(dtype)  # [GROUP_PAD, D]

    # this token's key and value; split 0 writes them into the ring
    k_base = HEADS * D + kv_head * D
    v_base = HEADS * D + KV_HEADS * D + kv_head * D
    k_new = _rotated(qkv, k_base + d, k_base + rot, cos, sin, d < D).to(dtype)  # [D]
    v_new = tl.load(qkv + v_base + d)
    slot = tl.load(slot_ptr)
    if split == 0:
        tl.store(keys + kv_head * k_head_stride + slot * k_slot_stride + d, k_new)
        tl.store(values + kv_head * v_head_stride + slot * v_slot_stride + d, v_new)

    run_max = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    run_sum = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D], tl.float32)
    start = split * PER_SPLIT
    end = tl.minimum(start + PER_SPLIT, slots)
    for offset in range(0, PER_SPLIT, BLOCK):
        n = start + offset + tl.arange(0, BLOCK)
        inside = n < end
        visible = tl.load(mask_ptr + n, mask=inside, other=0) != 0
        visible = visible & inside & (n != slot)
        k = tl.load(
            keys + kv_head * k_head_stride + n[:, None] * k_slot_stride + d[None, :],
            mask=visible[:, None],
            other=0.0,
        )  # [BLOCK, D]
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # [GROUP_PAD, BLOCK]
        scores = tl.where(visible[None, :], scores, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(scores, axis=1))
        safe_max = tl.where(new_max == float("-inf"), 0.0, new_max)
        weights = tl.exp(scores - safe_max[:, None])
        decay = tl.exp(run_max - safe_max)
        run_sum = run_sum * decay + tl.sum(weights, axis=1)
        v = tl.load(
            values + kv_head * v_head_stride + n[:, None] * v_slot_stride + d[None, :],
            mask=visible[:, None],
            other=0.0,
        )  # [BLOCK, D]
        acc = acc * decay[:, None] + tl.dot(weights.to(dtype), v, input_precision="ieee")
        run_max = new_max
    if split == 0:  # this token attends to itself
        own = tl.sum(q.to(tl.float32) * k_new.to(tl.float32)[None, :], axis=1) * scale
        new_max = tl.maximum(run_max, own)
        decay = tl.exp(run_max - new_max)
        weight = tl.exp(own - new_max)
        run_sum = run_sum * decay + weight
        own_v = weight.to(dtype).to(tl.float32)[:, None] * v_new.to(tl.float32)[None, :]
        acc = acc * decay[:, None] + own_v
        run_max = new_max

    row = head * SPLITS + split
    tl.store(part_max + row, run_max, mask=real)
    tl.store(part_sum + row, run_sum, mask=real)
    tl.store(part_acc + row[:, None] * D + d[None, :], acc, mask=real[:, None])


@triton.jit
def combine_kernel(
    part_max, part_sum, part_acc, out, D: tl.constexpr, SPLITS: tl.constexpr,
    SPLITS_PAD: tl.constexpr,
):  # fmt: skip
    head = tl.program_id(0)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, D)
    real = s < SPLITS
    maxes = tl.load(part_max + head * SPLITS + s, mask=real, other=float("-inf"))
    sums = tl.load(part_sum + head * SPLITS + s, mask=real, other=0.0)
    rows = head * SPLITS + s
    acc = tl.load(part_acc + rows[:, None] * D + d[None, :], mask=real[:, None], other=0.0)
    top = tl.max(maxes, axis=0)
    scale = tl.where(maxes == float("-inf"), 0.0, tl.exp(maxes - top))
    total = tl.sum(sums * scale, axis=0)
    merged = tl.sum(acc * scale[:, None], axis=0) / total
    tl.store(out + head * D + d, merged.to(out.dtype.element_ty))
