"""The fused decode step computes what the model's own forward computes, on the CPU."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from streamd.cache import fused as fused_module
from streamd.cache import single_query
from streamd.cache.decode import DecodeOptions, StaticDecoder
from streamd.cache.fused import FusedDecodeStep, fusion_unsupported
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout

SHAPE = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)


def _model(kind: str, **extra: Any) -> Any:
    torch.manual_seed(0)
    families = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),  # q/k/v biases
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),  # q/k norms
    }
    config_cls, model_cls = families[kind]
    model = model_cls(config_cls(**SHAPE, **extra)).eval()
    if kind == "qwen2":  # random biases, so that fusing them wrongly would show
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                torch.nn.init.normal_(proj.bias, std=0.5)
    if kind == "qwen3":  # norm weights away from 1, so that skipping a norm would show
        for layer in model.model.layers:
            for norm in (layer.self_attn.q_norm, layer.self_attn.k_norm):
                torch.nn.init.normal_(norm.weight, mean=1.0, std=0.5)
    return model


def _streamed(model: Any) -> tuple[RingModel, torch.Tensor]:
    """A ring after 4 pinned + 150 stream tokens (several wraps); returns (runner, last logits)."""
    layout = CacheLayout.build(pinned=4, window=40, chunk=16, scratch=24)
    runner = RingModel(model, build_ring_cache(model, layout))
    ids = torch.randint(0, SHAPE["vocab_size"], (154,), generator=torch.Generator().manual_seed(1))
    runner.prefix(ids[:4].unsqueeze(0))
    logits = torch.empty(0)
    for start in range(4, 154, 16):
        logits = runner.stream(ids[start : start + 16].unsqueeze(0))[0, -1]
    return runner, logits


@pytest.fixture(params=["sdpa", "grouped"])
def cpu_attention(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Either of the two kernels one decode query can take on a CPU, whichever this CPU
    would time faster (cache/single_query.py): the step must agree with both."""
    sdpa = request.param == "sdpa"
    for module in (single_query, fused_module):
        monkeypatch.setattr(module, "sdpa_faster_on_cpu", lambda *_: sdpa)
    return str(request.param)


@pytest.mark.parametrize("kind", ["llama", "mistral", "qwen2", "qwen3"])
@torch.inference_mode()
def test_fused_step_gives_the_logits_of_the_models_own_forward(
    kind: str, cpu_attention: str
) -> None:
    model = _model(kind)
    runner, _ = _streamed(model)
    fused = FusedDecodeStep(model, runner.ring)
    ring = runner.ring
    ring.begin_scratch()
    runner.scratch(torch.tensor([[5, 6, 7]]))
    token = torch.tensor([[11]])
    for step in range(6):  # consecutive steps: each sees the K/V the previous one wrote
        ring.arm_decode()
        ring.refresh_decode()
        own = runner.forward(ring.decode_plan, token)
        ours = fused.forward(ring.decode_plan, token)
        torch.testing.assert_close(ours, own, rtol=1e-5, atol=1e-5)
        ring.finish_decode(1)
        token = own[0, -1].argmax().view(1, 1)
        assert step < 5 or ring.scratch_used == 9
    ring.end_scratch()


def test_fusing_leaves_the_models_forward_and_memory_unchanged() -> None:
    model = _model("qwen2")
    ids = torch.randint(0, SHAPE["vocab_size"], (1, 40), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ids).logits
    bytes_before = _parameter_bytes(model)
    runner, _ = _streamed(model)
    FusedDecodeStep(model, runner.ring)
    FusedDecodeStep(model, runner.ring)  # a second step fuses nothing more
    model.set_attn_implementation("sdpa")
    with torch.no_grad():
        after = model(ids).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert _parameter_bytes(model) == bytes_before
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == (
        attn.q_proj.weight.untyped_storage().data_ptr()
    ), "q and k should be views of one fused tensor"


def _parameter_bytes(model: Any) -> int:
    storages = {
        p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()
    }
    return sum(storages.values())


def test_static_decoder_tokens_are_the_same_fused_or_not() -> None:
    results = []
    for fused in (True, False):
        model = _model("llama")
        runner, first = _streamed(model)
        decoder = StaticDecoder(
            runner, SHAPE["vocab_size"], DecodeOptions(frozenset(), fused=fused)
        )
        assert decoder.fused is fused
        runner.ring.begin_scratch()
        results.append(decoder.generate(first, 20))
        runner.ring.end_scratch()
    assert len(results[0]) == 20
    assert results[0] == results[1]


def test_models_that_cannot_be_fused_decode_through_their_own_forward() -> None:
    model = _model("llama", hidden_act="gelu")
    assert "gelu" in (fusion_unsupported(model) or "")
    runner, first = _streamed(model)
    decoder = StaticDecoder(runner, SHAPE["vocab_size"], DecodeOptions(frozenset()))
    assert not decoder.fused
    with pytest.raises(ValueError, match="gelu"):
        FusedDecodeStep(model, runner.ring)
    runner.ring.begin_scratch()
    assert len(decoder.generate(first, 5)) == 5
    runner.ring.end_scratch()
