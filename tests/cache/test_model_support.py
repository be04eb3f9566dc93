"""Which models the ring cache can drive, and that it leaves ordinary forwards alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GraniteConfig,
    LlamaConfig,
    MistralConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from streamd.cache.families import UnsupportedModel, check_supported
from streamd.cache.hf import RingModel, build_ring_cache
from streamd.cache.layout import CacheLayout
from streamd.daemon.engine.loading import load_model

SUPPORTED = [
    LlamaConfig(),
    MistralConfig(),
    Qwen2Config(),
    Qwen3Config(),
    Olmo2Config(),
    GraniteConfig(),
    Phi3Config(),
    Gemma3TextConfig(),
]


@pytest.mark.parametrize("config", SUPPORTED, ids=lambda c: c.model_type)
def test_families_with_plain_rope_are_accepted(config: object) -> None:
    check_supported(config)


def test_positions_that_are_not_rotary_are_refused_with_the_reason_and_the_families() -> None:
    with pytest.raises(UnsupportedModel, match=r"model type 'gpt2' is not supported") as refused:
        check_supported(GPT2Config())
    assert "learned absolute positions" in str(refused.value)
    assert "gemma3_text, granite, llama, mistral, olmo2, phi3, qwen2, qwen3" in str(refused.value)
    with pytest.raises(UnsupportedModel, match="softcapping"):
        check_supported(Gemma2Config())


def test_phi3_long_context_and_partial_rotary_variants_are_refused_with_the_reason() -> None:
    longrope = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}
    with pytest.raises(UnsupportedModel, match="'longrope' is not supported"):
        check_supported(Phi3Config(hidden_size=64, num_attention_heads=4, rope_scaling=longrope))
    with pytest.raises(UnsupportedModel, match="partial rotary"):
        check_supported(
            Phi3Config(hidden_size=64, num_attention_heads=4, partial_rotary_factor=0.5)
        )


def test_a_refused_model_fails_before_its_weights_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(
        tmp_path
    )
    loads: list[object] = []
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", lambda *a, **k: loads.append(a))
    with pytest.raises(UnsupportedModel, match=r"'gpt2' is not supported.*Supported: gemma3_text"):
        load_model(str(tmp_path), device="cpu")
    assert loads == []  # refused on its config alone: no weights read


def test_rope_whose_frequencies_follow_the_context_is_refused() -> None:
    config = LlamaConfig(rope_scaling={"rope_type": "dynamic", "factor": 2.0})
    with pytest.raises(UnsupportedModel, match="'dynamic' is not supported"):
        check_supported(config)


def test_plain_forward_of_the_same_model_stays_causal(tiny_model: torch.nn.Module) -> None:
    """Driving a model over the ring must not change what its ordinary forward computes."""
    ids = torch.randint(0, 49152, (1, 24), generator=torch.Generator().manual_seed(0))
    tiny_model.set_attn_implementation("sdpa")
    with torch.inference_mode():
        before = tiny_model(ids).logits
    layout = CacheLayout.build(pinned=4, window=16, chunk=8, scratch=0)
    RingModel(tiny_model, build_ring_cache(tiny_model, layout))
    with torch.inference_mode():
        after = tiny_model(ids).logits
    assert torch.allclose(before, after, atol=1e-5)
