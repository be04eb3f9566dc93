"""The decode attention op: Triton kernels against the torch reference (Triton's CPU
interpreter here; tests/gpu runs the compiled kernels) and the op's CPU behaviour."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamd.cache.decode_attention import (
    decode_attention,
    decode_attention_reference,
    split_plan,
)

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def interpreted() -> list[dict]:
    if importlib.util.find_spec("triton") is None:
        pytest.skip("Triton is not installed (pip install triton)")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    script = HERE / "interpreted_decode_attention.py"
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_triton_kernels_attend_as_the_reference_does(interpreted: list[dict]) -> None:
    assert len(interpreted) == 4
    for case in interpreted:
        tolerance = 2e-3 if "float16" in case["case"][-1] else 1e-5
        assert case["max_abs_diff"] <= tolerance * max(1.0, case["scale"]), case


def test_triton_kernels_write_this_tokens_key_and_value_only(interpreted: list[dict]) -> None:
    for case in interpreted:
        # the reference rounds after each rotary op, the kernel once: one ulp apart
        assert case["key_diff"] <= (2e-3 if "float16" in case["case"][-1] else 1e-6), case
        assert case["values_equal"] and case["others_untouched"], case


def test_cases_cover_several_splits_and_empty_ones(interpreted: list[dict]) -> None:
    assert max(case["splits"] for case in interpreted) >= 5
    assert any(case["case"][4] == 0.0 for case in interpreted)


def test_split_plan_covers_every_slot_in_whole_blocks() -> None:
    for slots in (1, 63, 64, 65, 640, 4272, 100_000):
        for kv_heads in (1, 3, 8, 32):
            splits, per_split = split_plan(slots, kv_heads)
            assert per_split % 64 == 0
            assert (splits - 1) * per_split < slots <= splits * per_split


def test_op_on_cpu_is_the_reference_and_writes_the_ring() -> None:
    torch.manual_seed(1)
    heads, kv_heads, dim, slots = 4, 2, 16, 50
    qkv = torch.randn(heads * dim + 2 * kv_heads * dim)
    cos, sin = torch.ones(dim), torch.zeros(dim)
    keys, values = torch.zeros(1, kv_heads, slots, dim), torch.zeros(1, kv_heads, slots, dim)
    mask = torch.zeros(slots, dtype=torch.bool)
    mask[[0, 1, 9]] = True
    slot = torch.tensor([9])
    ref_keys, ref_values = keys.clone(), values.clone()
    want = decode_attention_reference(qkv, cos, sin, slot, mask, ref_keys, ref_values, heads, 1.0)
    got = decode_attention(qkv, cos, sin, slot, mask, keys, values, heads, 1.0)
    assert torch.equal(got, want)
    assert torch.equal(keys, ref_keys) and torch.equal(values, ref_values)
    # with cos = 1, sin = 0 the key is written unrotated
    assert torch.equal(keys[0, :, 9].reshape(-1), qkv[heads * dim : (heads + kv_heads) * dim])
