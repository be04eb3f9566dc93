"""Low-bit decode weights on a CPU (cache/lowbit.py, decode_weights.py): int4 groups land
on a Q4_1 grid exactly, the int4 decode step computes what the model computes, and the
copies saved at one start are put back at the next."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from streamd.cache.decode_weights import decode_projections, lowbit_state, restore_lowbit
from streamd.cache.fused import FusedDecodeStep, fused_layers
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.cache.lowbit import INT4_GROUP, Int4Groups, Int8Rows, int4_groups, int8_rows

# Its sizes fit the int4 kernel: output rows in tiles of 16, inputs in groups of 32.
from tests.cache.test_fused_step import SHAPE


def _on_q4_1_grid(rows: int, columns: int, seed: int) -> torch.Tensor:
    """[rows, columns] fp32, each group of 32 inputs d * q + m with q in 0..15 (a GGUF's
    Q4_1), using both ends of the range as Q4_1's quantizer does."""
    g = torch.Generator().manual_seed(seed)
    groups = columns // INT4_GROUP
    d = torch.rand(rows, groups, 1, generator=g) * 0.05 + 0.01
    m = torch.randn(rows, groups, 1, generator=g) * 0.1 - 8 * d
    q = torch.randint(0, 16, (rows, groups, INT4_GROUP), generator=g).float()
    q[..., 0], q[..., 1] = 0, 15
    return (d * q + m).reshape(rows, columns)


def test_int4_groups_give_back_the_q4_1_values() -> None:
    weight = _on_q4_1_grid(48, 96, seed=0)
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1)).bfloat16()
    got = int4_groups(weight.bfloat16())(x).float()
    want = x.float() @ weight.T
    # Only bf16's rounding of the scale, zero and output: ~3 significant digits.
    assert (got - want).abs().max() <= 1e-2 * want.abs().max()


def test_int8_rows_round_each_value_to_within_half_a_step() -> None:
    weight = torch.randn(32, 64, generator=torch.Generator().manual_seed(2))
    rows = int8_rows(weight)
    restored = rows.values.float() * rows.scale.float()[:, None]
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((restored - weight).abs() <= step * 0.51 + 1e-3 * weight.abs()).all()


def _grid_model() -> Any:
    """A tiny Llama in bf16 whose projections lie on a Q4_1 grid, as the default model's
    GGUF does: int4 copies of them lose nothing but bf16 rounding."""
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    with torch.no_grad():
        for index, layer in enumerate(model.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj]
            for offset, linear in enumerate([*linears, mlp.gate_proj, mlp.up_proj, mlp.down_proj]):
                linear.weight.copy_(_on_q4_1_grid(*linear.weight.shape, seed=10 * index + offset))
    return model.to(torch.bfloat16)


def _ring(model: Any) -> RingModel:
    layout = CacheLayout.build(pinned=4, window=40, chunk=16, scratch=24)
    runner = RingModel(model, build_ring_cache(model, layout))
    ids = torch.randint(0, SHAPE["vocab_size"], (84,), generator=torch.Generator().manual_seed(3))
    runner.prefix(ids[:4].unsqueeze(0))
    for start in range(4, 84, 16):
        runner.stream(ids[start : start + 16].unsqueeze(0))
    return runner


def _step_logits(model: Any, weights: str, steps: int = 4) -> list[torch.Tensor]:
    runner = _ring(model)
    step = FusedDecodeStep(model, runner.ring, weights=weights)
    ring, logits = runner.ring, []
    ring.begin_scratch()
    runner.scratch(torch.tensor([[5, 6, 7]]))
    ring.arm_decode()
    for token in range(11, 11 + steps):  # each step sees the K/V the previous one wrote
        ring.refresh_decode()
        logits.append(step.forward(ring.decode_plan, torch.tensor([[token]]))[0, -1].float())
        ring.advance_decode()
    ring.end_scratch()
    return logits


@torch.inference_mode()
def test_the_int4_decode_step_computes_what_the_model_weights_compute() -> None:
    model = _grid_model()
    dense = _step_logits(model, "model")
    small = _step_logits(model, "int4")
    layers, head = decode_projections(model, fused_layers(model), "int4")
    assert isinstance(layers[0].qkv, Int4Groups) and isinstance(layers[0].down, Int4Groups)
    assert isinstance(head, Int8Rows)  # the tied embedding rows: int8, as a GGUF's Q8_0
    for want, got in zip(dense, small, strict=True):
        assert (got - want).abs().max() <= 0.05 * want.abs().max()


@torch.inference_mode()
def test_saved_int4_copies_restore_to_the_same_decode_step() -> None:
    model = _grid_model()
    made = _step_logits(model, "int4")
    state = lowbit_state(model)
    again = _grid_model()  # a new load of the same model: nothing made yet
    assert lowbit_state(again) == {}
    restore_lowbit(again, state)
    for want, got in zip(made, _step_logits(again, "int4"), strict=True):
        assert torch.equal(want, got)
    other = LlamaForCausalLM(LlamaConfig(**{**SHAPE, "num_hidden_layers": 4})).bfloat16()
    with pytest.raises(ValueError, match=r"lack '3\.qkv"):
        restore_lowbit(other, state)


def test_int4_copies_of_an_fp32_model_are_refused_with_the_reason() -> None:
    model = LlamaForCausalLM(LlamaConfig(**SHAPE)).eval()
    with pytest.raises(ValueError, match="need bf16 activations"):
        decode_projections(model, fused_layers(model), "int4")
