"""Run by test_decode_attention.py under TRITON_INTERPRET=1 (Triton's CPU interpreter).

Prints one JSON line per case: the largest output difference between the
Triton kernels and the torch reference, and whether both wrote the same key
and value into the ring. Not a test module itself: the interpreter has to be
switched on before Triton is imported.
"""

from __future__ import annotations

import json

import torch

from streamd.cache.decode_attention import (
    decode_attention_reference,
    decode_attention_triton,
    split_plan,
)

# (heads, kv heads, head dim, slots, visible fraction, dtype); the interpreter has no bf16
CASES = [
    (9, 3, 64, 640, 0.7, torch.float32),  # SmolLM2-135M's heads, the bench rows' ring
    (8, 2, 32, 1000, 0.7, torch.float16),
    (32, 8, 128, 300, 0.7, torch.float32),  # Llama-3-8B's heads
    (4, 4, 16, 900, 0.0, torch.float32),  # only the new token visible: empty splits
]


def run_case(heads: int, kv_heads: int, dim: int, slots: int, visible: float, dtype: torch.dtype):
    qkv = torch.randn(heads * dim + 2 * kv_heads * dim).to(dtype)
    angle = torch.rand(dim // 2) * 3
    cos = torch.cat([angle.cos(), angle.cos()]).to(dtype)
    sin = torch.cat([-angle.sin(), angle.sin()]).to(dtype)
    keys = torch.randn(1, kv_heads, slots, dim).to(dtype)
    values = torch.randn(1, kv_heads, slots, dim).to(dtype)
    mask = torch.rand(slots) < visible
    write = slots - 7
    mask[write] = True
    slot = torch.tensor([write])
    ref_keys, ref_values = keys.clone(), values.clone()
    want = decode_attention_reference(
        qkv, cos, sin, slot, mask, ref_keys, ref_values, heads, dim**-0.5
    )
    got = decode_attention_triton(qkv, cos, sin, slot, mask, keys, values, heads, dim**-0.5)
    return {
        "case": [heads, kv_heads, dim, slots, visible, str(dtype)],
        "splits": split_plan(slots, kv_heads)[0],
        "max_abs_diff": (got.float() - want.float()).abs().max().item(),
        "scale": want.float().abs().max().item(),
        "key_diff": (keys - ref_keys).float().abs().max().item(),
        "values_equal": torch.equal(values, ref_values),
        "others_untouched": torch.equal(
            torch.cat([keys[:, :, :write], keys[:, :, write + 1 :]], dim=2),
            torch.cat([ref_keys[:, :, :write], ref_keys[:, :, write + 1 :]], dim=2),
        ),
    }


if __name__ == "__main__":
    torch.manual_seed(0)
    for case in CASES:
        print(json.dumps(run_case(*case)), flush=True)
