"""Which models the ring cache can drive, and that it leaves ordinary forwards alone."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from streamd.cache.hf import RingModel, UnsupportedModel, build_ring_cache, check_supported
from streamd.cache.layout import CacheLayout


@pytest.mark.parametrize("config", [LlamaConfig(), MistralConfig(), Qwen2Config()])
def test_llama_family_with_plain_rope_is_accepted(config: object) -> None:
    check_supported(config)


def test_positions_that_are_not_rotary_are_refused_with_the_reason() -> None:
    with pytest.raises(UnsupportedModel, match=r"model type 'gpt2' is not supported.*rotary"):
        check_supported(GPT2Config())


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
